"""The benchmark flow: datasets → splits → feature shards per method → matrix → report.

The same listings, shard tasks and content cache as `screen`: a feature is computed once
per (image, config) and reused across pairs, methods sharing a config, and runs.
"""

from __future__ import annotations

from prefect import flow

from diffpath.benchmark.regressions import previous_results
from diffpath.benchmark.run import Steps, run_benchmark
from diffpath.benchmark.spec import Sizes, load_spec
from diffpath.errors import AlertError
from diffpath.io.lock import output_lock
from diffpath.io.storage import read_json
from diffpath_flows.pipeline import DEFAULT_RUN, RUNNER, Dated, RunOptions, submit_shards
from diffpath_tasks.benchmark import benchmark_report_task, benchmark_task, split_task


@flow(name="benchmark", task_runner=RUNNER)
def benchmark_flow(
    spec: str,
    out: str,
    full: bool = False,
    ablations: bool | None = None,
    previous: str | None = None,
    data_root: str | None = None,
    run: RunOptions = DEFAULT_RUN,
    sizes: Sizes | None = None,
) -> dict[str, str]:
    """Measure a benchmark spec (YAML URI) → results.parquet, scores.parquet, summary.json,
    results.md and report.html under `out`.

    `full` takes the spec's full sizes and (unless `ablations` is False) its ablations.
    `previous` (a results.parquet, its folder, or "latest" for a dated `out`) adds deltas;
    the run fails with the regressions after writing its outputs. `run.model` replaces the
    spec's base model (to compare candidates on one spec), `sizes` the spec's sizes."""
    target = Dated.at_run_time(out)
    out, previous = target.out, previous_results(previous, target.template)
    bench = load_spec(spec, data_root, run.model)

    def featurize(jobs):
        futures = {
            job: submit_shards(listing, config, out, run, bench.model)
            for job, (config, listing) in jobs.items()
        }
        return {job: [future.result() for future in fs] for job, fs in futures.items()}

    steps = Steps(
        featurize=featurize,
        report=lambda folder: benchmark_report_task(folder, bench.model, run.device),
        split=split_task,
        measure=benchmark_task,
    )
    with output_lock(out):
        outputs = run_benchmark(bench, out, steps, sizes, full, ablations, previous, run.shard_size)
    target.point_latest()
    regressions = read_json(outputs["summary"])["regressions"]
    if regressions:
        raise AlertError([f"AUROC regression: {r}" for r in regressions], outputs)
    return outputs
