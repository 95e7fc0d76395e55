"""Benchmark tasks: split the datasets, measure the matrix, write its report."""

from __future__ import annotations

from prefect import get_run_logger, task

from diffpath.benchmark.run import write_benchmark
from diffpath.benchmark.spec import BenchmarkSpec, MethodSpec, Sizes
from diffpath.benchmark.splits import store_splits
from diffpath.io.sources import Listing
from diffpath.io.storage import read_json
from diffpath.reports.benchmark import benchmark_report
from diffpath_tasks.features import worker_model
from diffpath_tasks.retry import RETRY, transient_failure


@task(**RETRY, retry_condition_fn=transient_failure)
def split_task(
    spec: BenchmarkSpec, dataset: str, sizes: Sizes, out: str, shard_size: int
) -> dict[str, Listing]:
    """A dataset's fit / validation / test listings, stored under `out`."""
    listings = store_splits(spec, dataset, sizes, out, shard_size)
    counts = ", ".join(f"{role} {listing.n_images}" for role, listing in listings.items())
    get_run_logger().info("%s: %s", dataset, counts)
    return listings


@task(**RETRY, retry_condition_fn=transient_failure)
def benchmark_task(
    spec: BenchmarkSpec,
    methods: dict[str, MethodSpec],
    shards: dict[tuple[str, str, str], list[str]],
    costs: dict[str, dict[str, float]],
    out: str,
    previous: str | None,
) -> dict[str, str]:
    """The matrix, the audit and the regression check → results, scores and summary URIs."""
    outputs = write_benchmark(spec, methods, shards, costs, out, previous)
    summary = read_json(outputs["summary"])
    log = get_run_logger()
    for row in summary["methods"]:
        log.info("%-16s mean test AUROC %.4f", row["method"], row["test_auroc"])
    log.info("chosen on validation: %s", summary["chosen_default"])
    return outputs


@task(**RETRY, retry_condition_fn=transient_failure)
def benchmark_report_task(out: str, model: str, device: str | None = None) -> str:
    """results.md and report.html, error maps drawn by the benchmark's model (`model`: its
    source, as in the spec)."""
    return benchmark_report(out, worker_model(model, "float32", device, compile=False))
