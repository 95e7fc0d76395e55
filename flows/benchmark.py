"""The benchmark flow: datasets → splits → feature shards per method → matrix → report.

The same listings, shard tasks and content cache as `screen`: a feature is computed once
per (image, config) and reused across pairs, methods sharing a config, and runs.
"""

from __future__ import annotations

from prefect import flow

from diffpath.benchmark.regressions import previous_results
from diffpath.benchmark.run import feature_jobs, method_costs
from diffpath.benchmark.spec import Sizes, load_spec
from diffpath.errors import AlertError
from diffpath.io.lock import output_lock
from diffpath.io.storage import read_json
from flows.pipeline import DEFAULT_RUN, RUNNER, Dated, RunOptions, submit_shards
from tasks.benchmark import benchmark_report_task, benchmark_task, split_task


@flow(name="benchmark", task_runner=RUNNER)
def benchmark_flow(
    spec: str,
    out: str,
    full: bool = False,
    ablations: bool | None = None,
    previous: str | None = None,
    data_root: str | None = None,
    run: RunOptions = DEFAULT_RUN,
    model: str | None = None,
    sizes: Sizes | None = None,
) -> dict[str, str]:
    """Measure a benchmark spec (YAML URI) → results.parquet, scores.parquet, summary.json,
    results.md and report.html under `out`.

    `full` takes the spec's full sizes and (unless `ablations` is False) its ablations.
    `previous` (a results.parquet, its folder, or "latest" for a dated `out`) adds deltas;
    the run fails with the regressions after writing its outputs. `model` replaces the
    spec's base model (to compare candidates on one spec), `sizes` the spec's sizes."""
    target = Dated.at_run_time(out)
    out, previous = target.out, previous_results(previous, target.template)
    bench = load_spec(spec, data_root, model)
    sizes = sizes or (bench.full_sizes if full and bench.full_sizes else bench.sizes)
    methods = bench.run_methods(full if ablations is None else ablations)
    with output_lock(out):
        splits = {
            name: split_task(bench, name, sizes, out, run.shard_size) for name in bench.datasets
        }
        jobs, uses = feature_jobs(bench, methods, splits)
        futures = {
            job: submit_shards(listing, config, out, run) for job, (config, listing) in jobs.items()
        }
        done = {job: [future.result() for future in fs] for job, fs in futures.items()}
        counts = {key: done[job] for key, job in uses.items()}
        shards = {key: [c.uri for c in shard_counts] for key, shard_counts in counts.items()}
        costs = method_costs(bench, methods, counts)
        outputs = benchmark_task(bench, methods, shards, costs, out, previous)
        outputs["report"] = benchmark_report_task(out, bench.model, run.device)
    target.point_latest()
    regressions = read_json(outputs["summary"])["regressions"]
    if regressions:
        raise AlertError([f"AUROC regression: {r}" for r in regressions], outputs)
    return outputs
