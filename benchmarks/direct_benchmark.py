"""Run a benchmark spec in one process without Prefect (a lent GPU machine has none): the
core steps of flows/benchmark.py — splits, shards through the content cache, the matrix,
results.md and report.html — with the same outputs.

    python benchmarks/direct_benchmark.py benchmarks/shared-data.yaml --full --out OUT
"""

from __future__ import annotations

import argparse
import time

import torch

from diffpath.benchmark.run import feature_jobs, method_costs, write_benchmark
from diffpath.benchmark.spec import load_spec
from diffpath.benchmark.splits import store_splits
from diffpath.features.shards import featurize_shard
from diffpath.io.storage import join, read_bytes
from diffpath.model.diffusion import load_model
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
    sizes = spec.full_sizes if args.full and spec.full_sizes else spec.sizes
    methods = spec.run_methods(args.full)
    splits = {n: store_splits(spec, n, sizes, args.out, args.shard_size) for n in spec.datasets}
    jobs, uses = feature_jobs(spec, methods, splits)
    model = load_model(spec.model, device=args.device, dtype=torch.float32)  # the configs' dtype
    done = {}
    for job, (config, listing) in jobs.items():
        done[job] = [
            featurize_shard(model, listing, i, config, join(args.out, "features"), args.out)
            for i in range(listing.n_shards)
        ]
        seconds = sum(c.seconds for c in done[job])
        print(
            f"{config.method:14s} {config.config_hash()} {listing.n_images:5d} images "
            f"{seconds:6.1f} s",
            flush=True,
        )
    counts = {key: done[job] for key, job in uses.items()}
    shards = {key: [c.uri for c in cs] for key, cs in counts.items()}
    costs = method_costs(spec, methods, counts)
    outputs = write_benchmark(spec, methods, shards, costs, args.out, device=str(model.device))
    outputs["report"] = benchmark_report(args.out, model)
    print(read_bytes(join(args.out, "results.md")).decode())
    print(f"{time.perf_counter() - started:.0f} s in all; {outputs}")


if __name__ == "__main__":
    main()
