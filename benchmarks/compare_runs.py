"""Benchmark runs side by side, per pair, with the DiffPath paper's published AUROC beside.

    python benchmarks/compare_runs.py v1=runs/select-v1 v2=runs/select-v2 --split validation

Reads each run's results.parquet (one method: --method, default `default`) and prints a
Markdown table per pair plus the means over the paper's 12 pairs, the 9 of them that exist
here (Tiny ImageNet stands in for CIFAR-100) and the shared-data matrix's 12 pairs.
"""

from __future__ import annotations

import argparse
from itertools import permutations
from pathlib import Path

import polars as pl

# DiffPath-6D with its CelebA model (Heng & Soh, NeurIPS 2024, Table 1); CIFAR-100 → tinyimagenet.
PAPER_6D = {
    ("cifar10", "svhn"): 0.910,
    ("cifar10", "celeba"): 0.897,
    ("cifar10", "tinyimagenet"): 0.590,
    ("cifar10", "dtd"): 0.923,
    ("svhn", "cifar10"): 0.939,
    ("svhn", "celeba"): 0.979,
    ("svhn", "tinyimagenet"): 0.953,
    ("svhn", "dtd"): 0.981,
    ("celeba", "cifar10"): 0.998,
    ("celeba", "svhn"): 1.000,
    ("celeba", "tinyimagenet"): 0.998,
    ("celeba", "dtd"): 0.999,
}
NINE = [pair for pair in PAPER_6D if "tinyimagenet" not in pair]
SHARED = list(permutations(("cifar10", "celeba", "tinyimagenet", "dtd"), 2))
NAMES = {
    "cifar10": "CIFAR-10",
    "celeba": "CelebA",
    "svhn": "SVHN",
    "tinyimagenet": "Tiny ImageNet (for C100)",
    "dtd": "DTD",
}


def aurocs(folder: Path, split: str, method: str) -> dict[tuple[str, str], float]:
    rows = pl.read_parquet(folder / "results.parquet").filter(
        (pl.col("split") == split) & (pl.col("method") == method)
    )
    return {(r["in_dist"], r["ood"]): r["auroc"] for r in rows.iter_rows(named=True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("runs", nargs="+", help="NAME=RUN_FOLDER")
    parser.add_argument("--split", default="validation", choices=["validation", "test"])
    parser.add_argument("--method", default="default")
    args = parser.parse_args()
    runs = {
        n: aurocs(Path(f), args.split, args.method) for n, f in (r.split("=", 1) for r in args.runs)
    }
    pairs = [p for p in {**PAPER_6D, **dict.fromkeys(SHARED)} if all(p in r for r in runs.values())]
    print(f"{args.split} AUROC, method {args.method}\n")
    print("| in-dist | OOD | paper 6D | " + " | ".join(runs) + " |")
    print("|---|---|---|" + "---|" * len(runs))
    for pair in pairs:
        paper = f"{PAPER_6D[pair]:.3f}" if pair in PAPER_6D else "—"
        cells = " | ".join(f"{r[pair]:.3f}" for r in runs.values())
        print(
            f"| {NAMES.get(pair[0], pair[0])} | {NAMES.get(pair[1], pair[1])} | {paper} | {cells} |"
        )
    for label, group in (
        ("paper's 12", list(PAPER_6D)),
        ("the 9 here", NINE),
        ("shared 12", SHARED),
    ):
        group = [p for p in group if p in pairs]
        if not group:
            continue
        paper = [PAPER_6D[p] for p in group if p in PAPER_6D]
        paper_mean = f"{sum(paper) / len(paper):.3f}" if len(paper) == len(group) else "—"
        means = " | ".join(f"{sum(r[p] for p in group) / len(group):.3f}" for r in runs.values())
        print(f"| **mean, {label}** | ({len(group)} pairs) | {paper_mean} | {means} |")
    nine = [p for p in NINE if p in pairs]
    if nine:
        wins = " | ".join(str(sum(r[p] >= PAPER_6D[p] for p in nine)) for r in runs.values())
        print(f"| at or above the paper | (of {len(nine)}) | | {wins} |")


if __name__ == "__main__":
    main()
