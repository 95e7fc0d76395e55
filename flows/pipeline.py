"""The screening pipeline: source → shards → features (Parquet) → fit / score → report.

Flows only orchestrate: they list, map shard tasks, wait and pass URIs along. They run
on a local thread pool by default (no Prefect server needed); deployments swap in Dask.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Literal

import prefect.runtime as prefect_runtime
from prefect import flow, unmapped
from prefect.futures import PrefectFutureList
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from diffpath.config import FeatureConfig
from diffpath.errors import AlertError, ConfigError
from diffpath.features.shards import ShardCounts
from diffpath.io.lock import output_lock
from diffpath.io.runs import dated
from diffpath.io.sources import Listing
from diffpath.io.storage import join
from diffpath.model.diffusion import gpu_count, resolve_dtype
from diffpath.scoring.alerts import ScreenPolicy
from diffpath.scoring.grouping import Grouping
from diffpath.scoring.reference import check_fit_options
from diffpath_flows.run import RunOptions
from diffpath_tasks.features import compact_cache_task, featurize_shard_task
from diffpath_tasks.reference import (
    check_split_task,
    fit_reference_task,
    pin_reference_task,
    reference_setup_task,
)
from diffpath_tasks.reports import (
    audit_report_task,
    evaluate_report_task,
    history_task,
    point_latest_task,
    publish_task,
    screen_report_task,
)
from diffpath_tasks.scoring import (
    audit_task,
    check_policy_task,
    evaluate_task,
    protected_index_task,
    screen_task,
)
from diffpath_tasks.sources import list_images

RUNNER = ThreadPoolTaskRunner(max_workers=1)  # one model per process; shards queue on it


def run_time() -> datetime:
    """When this flow run was scheduled to start (a deployment's schedule), else now: what
    `{date}` and `{datetime}` in source and output URIs stand for."""
    scheduled = prefect_runtime.flow_run.scheduled_start_time
    return datetime.now(timezone.utc) if scheduled is None else scheduled


@dataclass(frozen=True)
class Dated:
    """A run's output folder: the URI as given (maybe with `{date}`), the folder it names at
    this run's time, and that time. Every flow resolves its outputs and sources here."""

    template: str
    out: str
    when: datetime

    @classmethod
    def at_run_time(cls, template: str) -> Dated:
        when = run_time()
        return cls(template, dated(template, when), when)

    def sources(self, uris: list[str]) -> list[str]:
        return [dated(uri, self.when) for uri in uris]

    def point_latest(self) -> None:
        """`latest.json` beside the dated folders (nothing for an undated `out`)."""
        point_latest_task(self.template, self.out, self.when)


def task_runner(
    runner: Literal["threads", "dask"] = "threads",
    address: str | None = None,
    workers: int | None = None,
) -> TaskRunner:
    """Threads in this process, or Dask: the cluster at `address` (which implies Dask), else a
    LocalCluster of `workers` processes, one task at a time each: by default one per GPU, so
    each feature task has a GPU to itself (worker i takes cuda:i), and one on a machine
    without GPUs, where torch already uses every core (two would fight for them). Dask
    workers report to the Prefect server of PREFECT_API_URL."""
    if runner == "threads" and address is None:
        return RUNNER
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as err:
        raise ConfigError("--runner dask needs prefect-dask: pip install 'diffpath[dask]'") from err
    if not os.environ.get("PREFECT_API_URL"):
        raise ConfigError(
            "--runner dask needs a Prefect server its workers can reach: start one with "
            "`prefect server start` and set PREFECT_API_URL"
        )
    if address:
        return DaskTaskRunner(address=address)
    cluster = {
        "n_workers": workers or max(1, gpu_count()),
        "threads_per_worker": 1,
        "processes": True,
        "dashboard_address": None,
    }
    return DaskTaskRunner(cluster_kwargs=cluster)


DEFAULT_CONFIG = FeatureConfig(dtype="auto")  # resolved for the run's device by a fit
DEFAULT_RUN = RunOptions()
DEFAULT_POLICY = ScreenPolicy()


@dataclass(frozen=True)
class Featurized:
    """A source's listing and what its shard tasks did."""

    listing: Listing
    shards: list[ShardCounts]

    @property
    def uris(self) -> list[str]:
        return [shard.uri for shard in self.shards]

    def counts(self) -> dict[str, int]:
        """Totals for the summary: features computed now vs. found in the cache."""
        return {
            "features_computed": sum(s.n_computed for s in self.shards),
            "features_from_cache": sum(s.n_cached for s in self.shards),
        }


def featurize(
    source: list[str],
    config: FeatureConfig,
    out: str,
    run: RunOptions,
    model: str | None = None,
    allow_empty: bool = False,
) -> Featurized:
    """List `source` and map one feature task over its shards, on the weights at `model`
    (default: the run's, else the bundled model).
    Listing runs on the task runner (a Dask worker there), not in the flow: it holds ~400
    bytes per image."""
    listing = list_images.submit(
        source, out, run.shard_size, run.max_images, config.seed, allow_empty
    ).result()
    futures = submit_shards(listing, config, out, run, model)
    return Featurized(listing=listing, shards=[future.result() for future in futures])


def submit_shards(
    listing: Listing, config: FeatureConfig, out: str, run: RunOptions, model: str | None = None
) -> PrefectFutureList:
    """Compact the feature cache, then map one feature task over a stored listing's shards
    on the weights at `model` (default: the run's, else the bundled model; results:
    `ShardCounts`)."""
    cache_root = run.features_root or join(out, "features")
    compact_cache_task.submit(cache_root).result()  # on a worker: the index can be large
    return featurize_shard_task.map(
        unmapped(listing),
        range(listing.n_shards),
        unmapped(config),
        unmapped(cache_root),
        unmapped(out),
        unmapped(model or run.model or "default"),
        unmapped(run.device),
        unmapped(run.compile),
        unmapped(run.batches),
        unmapped(run.progress),
        unmapped(run.runner == "threads" and run.dask_address is None),  # shards in order
    )


@flow(name="fit-reference", task_runner=RUNNER)
def fit_reference_flow(
    source: list[str],
    out: str,
    config: FeatureConfig = DEFAULT_CONFIG,
    density: str = "auto",
    target_fpr: float = 0.05,
    holdout: float = 0.2,
    run: RunOptions = DEFAULT_RUN,
    grouping: Grouping | None = None,
) -> str:
    """Trusted in-distribution images → fitted reference (density + threshold) JSON URI.

    A `grouping` (an identity column of Parquet sources, the images' folders) holds back
    whole groups for calibrating the threshold, so it holds for groups never seen; it is
    checked on the listing before any feature is computed. The weights are `run.model`
    (default: the bundled model). Sources and `out` may hold `{date}`/`{datetime}`
    (`run_time`); a dated `out` gets a `latest.json` beside it. `dtype: auto` is resolved
    for `run.device` here (`resolve_dtype`) and recorded in the reference."""
    config = resolve_dtype(config, run.device)
    check_fit_options(density, config.method, target_fpr, holdout)
    model = run.model or "default"
    target = Dated.at_run_time(out)
    out, source = target.out, target.sources(source)
    with output_lock(out):
        listing = list_images.submit(
            source, out, run.shard_size, run.max_images, config.seed
        ).result()
        check_split_task(listing.uri, grouping, holdout, config.seed, target_fpr)
        futures = submit_shards(listing, config, out, run, model)
        shards = [future.result().uri for future in futures]
        reference = fit_reference_task(
            shards, config, out, density, target_fpr, holdout, grouping, model
        )
    target.point_latest()
    return reference


@flow(name="screen", task_runner=RUNNER)
def screen_flow(
    source: list[str],
    reference: str,
    out: str,
    run: RunOptions = DEFAULT_RUN,
    policy: ScreenPolicy = DEFAULT_POLICY,
    leak_check: list[str] | None = None,
) -> dict[str, str]:
    """Incoming images + reference → scores, errors, near duplicates, flagged lists,
    summary and report URIs; with `leak_check` (a protected set's sources), the images
    that are near copies of it (leaks.parquet), which always alert.

    The feature config and weights are the reference's; `run.model` says where the weights
    are when they moved (checked by fingerprint before any feature is computed). Sources
    and `out` may hold `{date}`/`{datetime}` (`run_time`); a dated `out` gets a
    `latest.json` beside it.
    The outputs are always written; then the run fails with `AlertError` if `policy` finds
    reasons to alert (which carries the output URIs)."""
    started, target = time.time(), Dated.at_run_time(out)
    out, source = target.out, target.sources(source)
    reference_setup_task(reference, run.model)  # refused here: nothing written
    check_policy_task(reference, policy)
    with output_lock(out):
        given, reference = reference, pin_reference_task(reference, out)  # the run's copy
        config, model = reference_setup_task(reference, run.model)
        protected = None
        if leak_check:
            cache_root = run.features_root or join(out, "features")
            protected = protected_index_task(target.sources(leak_check), cache_root, out)
        features = featurize(source, config, out, run, model, allow_empty=True)  # empty: alert
        extra = {"reference_from": given, **features.counts()}
        outputs = screen_task(
            features.uris, reference, out, started, source, extra, policy, protected
        )
        history = history_task(target.template)
        report = screen_report_task(out, reference, config, model, run.device, history)
        outputs = {**outputs, "report": report} | ({"history": history} if history else {})
        alerts = publish_task(out)
    target.point_latest()
    if alerts:
        raise AlertError(alerts, outputs)
    return outputs


@flow(name="audit", task_runner=RUNNER)
def audit_flow(
    source: list[str],
    out: str,
    config: FeatureConfig = DEFAULT_CONFIG,
    density: str = "auto",
    folds: int = 5,
    run: RunOptions = DEFAULT_RUN,
    reference: str | None = None,
    fdr: float = 0.1,
) -> dict[str, str]:
    """A set with unknown contamination → scores, suspects, estimated fraction, report.

    With a trusted `reference` the set is scored against it (its config and weights;
    `run.model` relocates them), the fraction estimated from conformal p-values and the
    suspects chosen at false-discovery rate `fdr`; else cross-fitted.
    Dates in `source` and `out` as in `screen_flow`."""
    target = Dated.at_run_time(out)
    out, source = target.out, target.sources(source)
    with output_lock(out):
        extra, model = {}, run.model or "default"
        if reference is not None:
            extra["reference_from"], reference = reference, pin_reference_task(reference, out)
            config, model = reference_setup_task(reference, run.model)
        else:
            config = resolve_dtype(config, run.device)
        features = featurize(source, config, out, run, model)
        extra |= features.counts()
        outputs = audit_task(
            features.uris, config, out, density, folds, source, extra, reference, fdr
        )
        outputs["report"] = audit_report_task(out)
    target.point_latest()
    return outputs


@flow(name="evaluate", task_runner=RUNNER)
def evaluate_flow(
    in_dist: list[str],
    ood: dict[str, list[str]],
    reference: str,
    out: str,
    run: RunOptions = DEFAULT_RUN,
) -> dict[str, str]:
    """In-distribution test set vs named OOD sets → metrics JSON and a report with ROC curves,
    on the reference's config and weights (`run.model` when they moved). Dates in sources
    and `out` as in `screen_flow`."""
    target = Dated.at_run_time(out)
    out, in_dist = target.out, target.sources(in_dist)
    with output_lock(out):
        reference = pin_reference_task(reference, out)
        config, model = reference_setup_task(reference, run.model)
        id_shards = featurize(in_dist, config, out, run, model).uris
        ood_shards = {
            name: featurize(target.sources(source), config, out, run, model).uris
            for name, source in ood.items()
        }
        metrics = evaluate_task(id_shards, ood_shards, reference, out)
        outputs = {"metrics": metrics, "report": evaluate_report_task(metrics, out)}
    target.point_latest()
    return outputs
