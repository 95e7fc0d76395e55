"""The screening pipeline: source → shards → features (Parquet) → fit / score → report.

Flows only orchestrate: they list, map shard tasks, wait and pass URIs along. They run
on a local thread pool by default (no Prefect server needed); deployments swap in Dask.
"""

from __future__ import annotations

import time

from prefect import flow, unmapped
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, ConfigDict, Field

from diffpath.config import FeatureConfig
from diffpath.errors import ConfigMismatchError
from diffpath.storage import join
from tasks.features import featurize_shard
from tasks.reference import fit_reference_task, reference_config
from tasks.reports import audit_report, evaluate_report, screen_report
from tasks.scoring import audit_shards, evaluate_shards, screen_shards
from tasks.sources import Listing, list_images

RUNNER = ThreadPoolTaskRunner(max_workers=1)  # one model per process; shards queue on it


class RunOptions(BaseModel):
    """How a run is executed; none of it changes a feature value."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    features_root: str | None = Field(None, description="feature cache URI (default OUT/features)")
    shard_size: int = Field(2048, ge=1, description="images per shard task")
    max_images: int | None = Field(None, ge=1, description="seeded subsample of the source")
    device: str | None = Field(None, description="cpu, cuda, cuda:1; default CUDA if present")
    progress: bool = Field(False, description="progress bars (CLI); off in workers")


DEFAULT_CONFIG = FeatureConfig()
DEFAULT_RUN = RunOptions()


def check_config(reference: str, config: FeatureConfig | None) -> FeatureConfig:
    """The reference's config, or `config` if it hashes the same; fails before any work."""
    fitted = reference_config(reference)
    if config is not None and config.config_hash() != fitted.config_hash():
        raise ConfigMismatchError(
            f"reference {reference} was fitted with config {fitted.config_hash()}, this run "
            f"asks for {config.config_hash()}; use the reference's settings or refit"
        )
    return config or fitted


def featurize(
    source: list[str], config: FeatureConfig, out: str, run: RunOptions
) -> tuple[Listing, list[str]]:
    """List `source` and map one feature task over its shards; returns their URIs."""
    listing = list_images(source, out, run.shard_size, run.max_images, config.seed)
    futures = featurize_shard.map(
        unmapped(listing),
        range(listing.n_shards),
        unmapped(config),
        unmapped(run.features_root or join(out, "features")),
        unmapped(run.device),
        unmapped(run.progress),
    )
    return listing, [future.result() for future in futures]


@flow(name="fit-reference", task_runner=RUNNER)
def fit_reference_flow(
    source: list[str],
    out: str,
    config: FeatureConfig = DEFAULT_CONFIG,
    density: str = "auto",
    target_fpr: float = 0.05,
    holdout: float = 0.2,
    run: RunOptions = DEFAULT_RUN,
) -> str:
    """Trusted in-distribution images → fitted reference (density + threshold) JSON URI."""
    _, shards = featurize(source, config, out, run)
    return fit_reference_task(shards, config, out, density, target_fpr, holdout, config.seed)


@flow(name="screen", task_runner=RUNNER)
def screen_flow(
    source: list[str],
    reference: str,
    out: str,
    config: FeatureConfig | None = None,
    run: RunOptions = DEFAULT_RUN,
) -> dict[str, str]:
    """Incoming images + reference → scores, errors, summary and report URIs.

    `config` defaults to the one the reference was fitted with."""
    started = time.time()
    config = check_config(reference, config)
    listing, shards = featurize(source, config, out, run)
    outputs = screen_shards(shards, reference, config, out, started)
    return {**outputs, "report": screen_report(out, listing.uri, reference)}


@flow(name="audit", task_runner=RUNNER)
def audit_flow(
    source: list[str],
    out: str,
    config: FeatureConfig = DEFAULT_CONFIG,
    density: str = "auto",
    folds: int = 5,
    run: RunOptions = DEFAULT_RUN,
) -> dict[str, str]:
    """A set with unknown contamination → cross-fitted scores, suspects, estimate, report."""
    listing, shards = featurize(source, config, out, run)
    outputs = audit_shards(shards, config, out, density, folds, config.seed)
    return {**outputs, "report": audit_report(out, listing.uri)}


@flow(name="evaluate", task_runner=RUNNER)
def evaluate_flow(
    in_dist: list[str],
    ood: dict[str, list[str]],
    reference: str,
    out: str,
    config: FeatureConfig | None = None,
    run: RunOptions = DEFAULT_RUN,
) -> dict[str, str]:
    """In-distribution test set vs named OOD sets → metrics JSON and a report with ROC curves."""
    config = check_config(reference, config)
    id_shards = featurize(in_dist, config, out, run)[1]
    ood_shards = {name: featurize(source, config, out, run)[1] for name, source in ood.items()}
    metrics = evaluate_shards(id_shards, ood_shards, reference, config, out)
    return {"metrics": metrics, "report": evaluate_report(metrics, out)}
