"""One benchmark run: the distinct feature jobs (a feature computed once per image and
config, shared across pairs and methods), their costs, and the matrix, audit and
regressions written as results.parquet, scores.parquet and summary.json."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from diffpath.benchmark.audit import audit_accuracy
from diffpath.benchmark.matrix import evaluate_matrix
from diffpath.benchmark.regressions import compare
from diffpath.benchmark.spec import BenchmarkSpec, MethodSpec, Sizes
from diffpath.benchmark.splits import store_splits
from diffpath.config import FeatureConfig
from diffpath.errors import ConfigError
from diffpath.features.cache import compact_caches
from diffpath.features.shards import ShardCounts, feature_matrix, featurize_shard, read_shards
from diffpath.io.sources import Listing
from diffpath.io.storage import join, read_parquet, write_json, write_parquet
from diffpath.model.diffusion import DiffusionModel

Job = tuple[str, str]  # (listing id, config hash): one feature run over one listing


def feature_jobs(
    spec: BenchmarkSpec,
    methods: Mapping[str, MethodSpec],
    splits: Mapping[str, Mapping[str, Listing]],
) -> tuple[dict[Job, tuple[FeatureConfig, Listing]], dict[tuple[str, str, str], Job]]:
    """The distinct feature runs (methods with one config on one listing share a run) and
    which run serves each (set, role, method)."""
    jobs, uses = {}, {}
    for m, method in methods.items():
        for name, roles in splits.items():
            config = spec.feature_config(method, name)
            for role, listing in roles.items():
                job = (listing.listing_id, config.config_hash())
                jobs.setdefault(job, (config, listing))
                uses[name, role, m] = job
    return jobs, uses


def method_costs(
    spec: BenchmarkSpec,
    methods: Mapping[str, MethodSpec],
    counts: Mapping[tuple[str, str, str], Sequence[ShardCounts]],
) -> dict[str, dict[str, float]]:
    """Per method: UNet evaluations per image, and the seconds and features computed by its
    shard tasks (shared by methods with one config; near 0 where the cache served)."""
    first = next(iter(spec.datasets))
    return {
        m: {
            "unet_evals": spec.feature_config(method, first).unet_evals,
            "seconds": sum(c.seconds for k, cs in counts.items() if k[2] == m for c in cs),
            "features_computed": sum(
                c.n_computed for k, cs in counts.items() if k[2] == m for c in cs
            ),
        }
        for m, method in methods.items()
    }


def load_features(
    spec: BenchmarkSpec,
    methods: Mapping[str, MethodSpec],
    shards: Mapping[tuple[str, str, str], Sequence[str]],
) -> tuple[dict[tuple[str, str, str], tuple[pa.Table, np.ndarray]], str, dict[str, int]]:
    """{(set, role, method): (locator rows, features)} from the run's shards, the model
    fingerprint (one model for all) and {"set/role": images that could not be read}."""
    features, models, unreadable = {}, set(), {}
    for (name, role, m), uris in shards.items():
        config = spec.feature_config(methods[m], name)
        frame, model_id = read_shards(list(uris), config)
        features[name, role, m] = feature_matrix(frame, config)
        models.add(model_id)
        if failed := frame.num_rows - len(features[name, role, m][0]):
            unreadable[f"{name}/{role}"] = failed
    if len(models) != 1:
        raise ConfigError(f"benchmark features come from several models: {sorted(models)}")
    return features, models.pop(), unreadable


def write_benchmark(
    spec: BenchmarkSpec,
    methods: Mapping[str, MethodSpec],
    shards: Mapping[tuple[str, str, str], Sequence[str]],
    costs: Mapping[str, dict[str, float]],
    out: str,
    previous: str | None = None,
    **extra: Any,
) -> dict[str, str]:
    """Measure the matrix (and the audit) from a run's shards and write results.parquet,
    scores.parquet and summary.json under `out`; `previous` (an earlier results.parquet)
    adds deltas and regressions to the summary."""
    features, model_id, unreadable = load_features(spec, methods, shards)
    matrix = evaluate_matrix(spec, methods, features, costs)
    audits = []
    if spec.audit:
        for m in dict.fromkeys([matrix.chosen, spec.baseline]):
            audits += audit_accuracy(spec, m, features, methods[m].density)
    deltas, regressions = [], []
    if previous:
        deltas, regressions = compare(
            matrix.rows, read_parquet(previous).to_pylist(), spec.tolerance
        )
    summary = {
        "name": spec.name,
        "model_id": model_id,
        "baseline": spec.baseline,
        "chosen_default": matrix.chosen,
        "chosen_on": "mean validation AUROC over the pairs",
        "methods": matrix.methods,
        "audit": audits,
        "previous": previous,
        "deltas": deltas,
        "regressions": regressions,
        "unreadable": unreadable,  # listed but not scored: the shards' `error` column says why
        "images": {
            f"{n}/{r}": len(features[n, r, m][0]) for n, r, m in features if m == spec.baseline
        },
        "spec": spec.model_dump(mode="json"),
        **extra,
    }
    return {
        "results": write_parquet(pa.Table.from_pylist(matrix.rows), join(out, "results.parquet")),
        "scores": write_parquet(matrix.scores, join(out, "scores.parquet")),
        "summary": write_json(summary, join(out, "summary.json")),
    }


Featurize = Callable[
    [Mapping[Job, tuple[FeatureConfig, Listing]]], Mapping[Job, Sequence[ShardCounts]]
]


@dataclass(frozen=True)
class Steps:
    """How a run's steps execute: plain calls (`featurize_here`), or the Prefect tasks of
    flows/benchmark.py; `run_benchmark` is the one order they run in."""

    featurize: Featurize
    report: Callable[[str], str]
    split: Callable[[BenchmarkSpec, str, Sizes, str, int], dict[str, Listing]] = store_splits
    measure: Callable[..., dict[str, str]] = write_benchmark


def featurize_here(model: Callable[[str], DiffusionModel], cache_root: str, out: str) -> Featurize:
    """Feature jobs in this process, shard after shard on `model(dtype)`, the model in
    each job's dtype (no Prefect)."""

    def featurize(jobs: Mapping[Job, tuple[FeatureConfig, Listing]]) -> dict[Job, list]:
        compact_caches(cache_root)
        return {
            job: [
                featurize_shard(
                    model(config.dtype), listing, i, config, cache_root, out, prefetch=True
                )
                for i in range(listing.n_shards)
            ]
            for job, (config, listing) in jobs.items()
        }

    return featurize


def run_benchmark(
    spec: BenchmarkSpec,
    out: str,
    steps: Steps,
    sizes: Sizes | None = None,
    full: bool = False,
    ablations: bool | None = None,
    previous: str | None = None,
    shard_size: int = 2048,
) -> dict[str, str]:
    """A spec measured under `out` → results, scores, summary and report URIs.

    `full` takes the spec's full sizes and (unless `ablations` is False) its ablations;
    `sizes` replaces the spec's; `previous` (an earlier results.parquet) adds deltas."""
    sizes = sizes or (spec.full_sizes if full and spec.full_sizes else spec.sizes)
    methods = spec.run_methods(full if ablations is None else ablations)
    splits = {name: steps.split(spec, name, sizes, out, shard_size) for name in spec.datasets}
    jobs, uses = feature_jobs(spec, methods, splits)
    done = steps.featurize(jobs)
    counts = {key: done[job] for key, job in uses.items()}
    shards = {key: [c.uri for c in shard_counts] for key, shard_counts in counts.items()}
    costs = method_costs(spec, methods, counts)
    outputs = steps.measure(spec, methods, shards, costs, out, previous)
    return {**outputs, "report": steps.report(out)}
