"""Run a benchmark spec in one process without Prefect (a lent GPU machine has none): the
flow's own `run_benchmark`, with plain steps in place of its tasks, so the outputs are the
flow's.

    python benchmarks/direct_benchmark.py benchmarks/shared-data.yaml --full --out OUT
"""

from __future__ import annotations

import argparse
import time

from diffpath.benchmark.run import Steps, featurize_here, run_benchmark
from diffpath.benchmark.spec import load_spec
from diffpath.io.storage import join, read_bytes
from diffpath.model.workers import cached_model
from diffpath.reports.benchmark import benchmark_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("spec")
    parser.add_argument("--out", required=True)
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--shard-size", type=int, default=2048)
    args = parser.parse_args()
    started = time.perf_counter()
    spec = load_spec(args.spec, args.data_root)

    def model(dtype: str = "float32"):
        return cached_model(spec.model, dtype, args.device)

    steps = Steps(
        featurize=featurize_here(model, join(args.out, "features"), args.out),
        report=lambda out: benchmark_report(out, model()),
    )
    outputs = run_benchmark(spec, args.out, steps, full=args.full, shard_size=args.shard_size)
    print(read_bytes(join(args.out, "results.md")).decode())
    print(f"{time.perf_counter() - started:.0f} s in all on {model().device}; {outputs}")


if __name__ == "__main__":
    main()
