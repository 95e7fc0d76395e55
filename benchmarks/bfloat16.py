"""bfloat16 against float32 for the default method, on the validation split of both
benchmark matrices (shared-data and paper): per pair the validation AUROC in each dtype,
and the mean over the pairs of bfloat16 − float32 with a paired bootstrap 95% interval
(each set's validation images resampled once per replicate, shared by both dtypes, as the
matrix resamples its test images). The density is the method's own, fitted on each
dtype's features of the same fit images.

    python benchmarks/bfloat16.py --out runs/bfloat16            # ~25 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import polars as pl

from diffpath.benchmark.matrix import resample
from diffpath.benchmark.run import Steps, featurize_here, run_benchmark
from diffpath.benchmark.spec import MethodSpec, load_spec
from diffpath.io.storage import join, read_json, read_parquet
from diffpath.model.workers import cached_model
from diffpath.scoring.metrics import bootstrap_aurocs, ood_metrics, percentile_interval

SPECS = [Path(__file__).parent / name for name in ("shared-data.yaml", "paper.yaml")]
DTYPES = ("float32", "bfloat16")


def measure(spec_path: Path, out: str, cache: str, device: str | None, n_boot: int) -> dict:
    """One matrix's pairs, the default method in each dtype: validation AUROCs and the
    paired difference."""
    spec = load_spec(str(spec_path))
    methods = {
        dtype: MethodSpec(label=f"default, {dtype}", config={"dtype": dtype}) for dtype in DTYPES
    }
    spec = spec.model_copy(
        update={
            "methods": methods,
            "ablations": {},
            "baseline": "float32",
            "candidates": None,
            "audit": None,
        }
    )
    steps = Steps(
        featurize=featurize_here(lambda dtype: cached_model(spec.model, dtype, device), cache, out),
        report=lambda folder: folder,
    )
    run_benchmark(spec, out, steps)
    scores = pl.from_arrow(read_parquet(join(out, "scores.parquet"))).filter(
        pl.col("split") == "validation"
    )

    def scored(dtype: str, in_dist: str, name: str) -> pl.DataFrame:
        return scores.filter(
            (pl.col("method") == dtype)
            & (pl.col("in_dist") == in_dist)
            & (pl.col("dataset") == name)
        )

    pairs, boots = [], {dtype: [] for dtype in DTYPES}
    for a, b in spec.pair_list():
        frames = {dtype: (scored(dtype, a, a), scored(dtype, a, b)) for dtype in DTYPES}
        for i in (0, 1):  # the same images in the same order in both dtypes: paired
            assert frames["float32"][i]["sha256"].equals(frames["bfloat16"][i]["sha256"])
        index = [
            resample(spec.seed, "validation", name, len(frames["float32"][i]), n_boot)
            for i, name in enumerate((a, b))
        ]
        row = {"in_dist": a, "ood": b}
        for dtype, (id_s, ood_s) in frames.items():
            id_s, ood_s = id_s["score"].to_numpy(), ood_s["score"].to_numpy()
            row[dtype] = ood_metrics(id_s, ood_s)["auroc"]
            boots[dtype].append(bootstrap_aurocs(id_s, ood_s, *index))
        row["difference"] = row["bfloat16"] - row["float32"]
        pairs.append(row)
    difference = np.mean(boots["bfloat16"], axis=0) - np.mean(boots["float32"], axis=0)
    summary = read_json(join(out, "summary.json"))
    seconds = {
        m["method"]: round(m["seconds"] / m["features_computed"], 3)
        if m["features_computed"]
        else None
        for m in summary["methods"]
    }
    return {
        "matrix": spec.name,
        "pairs": pairs,
        "validation_auroc": {d: float(np.mean([p[d] for p in pairs])) for d in DTYPES},
        "mean_difference": float(np.mean([p["difference"] for p in pairs])),
        "difference_interval": percentile_interval(difference),
        "pairs_bfloat16_lower": sum(p["difference"] < 0 for p in pairs),
        "seconds_per_computed_image": seconds,
    }


def markdown(results: list[dict]) -> str:
    lines = [
        "| matrix | pairs | float32 validation AUROC | bfloat16 "
        "| bfloat16 − float32 (95% interval) | pairs where bfloat16 is lower |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for r in results:
        low, high = r["difference_interval"]
        lines.append(
            f"| {r['matrix']} | {len(r['pairs'])} | {r['validation_auroc']['float32']:.4f} "
            f"| {r['validation_auroc']['bfloat16']:.4f} | {r['mean_difference']:+.4f} "
            f"({low:+.4f}, {high:+.4f}) | {r['pairs_bfloat16_lower']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", required=True, help="a folder for both runs and their shared cache"
    )
    parser.add_argument("--device", default=None)
    parser.add_argument("--bootstrap", type=int, default=2000)
    args = parser.parse_args()
    started, results = time.perf_counter(), []
    for spec in SPECS:
        results.append(
            measure(
                spec,
                join(args.out, spec.stem),
                join(args.out, "features"),
                args.device,
                args.bootstrap,
            )
        )
    print(json.dumps(results, indent=1))
    print(markdown(results))
    print(f"{time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()
