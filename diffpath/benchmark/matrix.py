"""The matrix: per (method, in-distribution set) a density fitted on `fit`, every set's
`validation` and `test` images scored; AUROC with a bootstrap 95% interval (each set
resampled once per replicate, shared by every pair and method), FPR@95 and AUPR per
pair. The default is chosen on validation pairs only."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from diffpath.benchmark.spec import SPLITS, BenchmarkSpec, MethodSpec
from diffpath.benchmark.splits import hash64
from diffpath.scoring.density import make_density
from diffpath.scoring.metrics import bootstrap_aurocs, ood_metrics, percentile_interval


def resample(seed: int, split: str, name: str, n: int, n_boot: int) -> np.ndarray:
    """(n_boot, n) bootstrap indices of one set's images in one split: drawn once, and
    shared by every pair and method that scores those images, so a mean over pairs and a
    difference between methods keep the correlations their shared images give them."""
    return np.random.default_rng(hash64(seed, split, name)).integers(0, n, (n_boot, n))


Features = Mapping[tuple[str, str, str], tuple[pa.Table, np.ndarray]]  # (set, role, method)


@dataclass
class Matrix:
    """A benchmark's measurements: one row per (split, in-dist, OOD, method), the scores
    behind them, and the per-method summary."""

    rows: list[dict[str, Any]]
    scores: pa.Table
    methods: list[dict[str, Any]]
    chosen: str


def evaluate_matrix(
    spec: BenchmarkSpec,
    methods: Mapping[str, MethodSpec],
    features: Features,
    costs: Mapping[str, dict[str, float]],
) -> Matrix:
    """Fit, score and measure every (method, pair) on validation and test images.

    `features[(set, role, method)]` = (locator rows, matrix); `costs[method]` holds its
    UNet evaluations per image and measured seconds. Intervals resample test images (each
    set's once per replicate, shared by pairs and methods); the density fit stays fixed."""
    rows, score_frames, boots = [], [], {}
    first = next(iter(methods))
    index = {
        (split, name): resample(
            spec.seed,
            split,
            name,
            len(features[name, split, first][1]),
            spec.bootstrap if split == "test" else 0,  # intervals: test only
        )
        for split in SPLITS
        for name in dict.fromkeys(n for pair in spec.pair_list() for n in pair)
    }
    for m, method in methods.items():
        for a in dict.fromkeys(a for a, _ in spec.pair_list()):
            config = spec.feature_config(method, a)
            density = make_density(method.density, config.method).fit(features[a, "fit", m][1])
            scored = {}
            for split in SPLITS:
                for name in dict.fromkeys([a, *(b for x, b in spec.pair_list() if x == a)]):
                    locators, matrix = features[name, split, m]
                    scored[split, name] = density.anomaly_score(matrix)
                    score_frames.append(
                        locators.select(["uri", "row", "path", "sha256"])
                        .append_column("score", pa.array(scored[split, name]))
                        .add_column(0, "method", pa.array([m] * len(locators), pa.string()))
                        .add_column(1, "in_dist", pa.array([a] * len(locators), pa.string()))
                        .add_column(2, "split", pa.array([split] * len(locators), pa.string()))
                        .add_column(3, "dataset", pa.array([name] * len(locators), pa.string()))
                    )
            for split in SPLITS:
                for x, b in spec.pair_list():
                    if x != a:
                        continue
                    id_s, ood_s = scored[split, a], scored[split, b]
                    boot = bootstrap_aurocs(id_s, ood_s, index[split, a], index[split, b])
                    boots[split, a, b, m] = boot
                    low, high = percentile_interval(boot)
                    rows.append(
                        {
                            "split": split,
                            "in_dist": a,
                            "ood": b,
                            "method": m,
                            **ood_metrics(id_s, ood_s),
                            "auroc_low": low,
                            "auroc_high": high,
                            "n_id": len(id_s),
                            "n_ood": len(ood_s),
                            "unet_evals": costs[m]["unet_evals"],
                        }
                    )
    summary = _method_summary(spec, methods, rows, boots, costs)
    candidates = spec.candidates or list(spec.methods)
    chosen = max(
        candidates, key=lambda m: next(s["validation_auroc"] for s in summary if s["method"] == m)
    )
    return Matrix(rows, pa.concat_tables(score_frames), summary, chosen)


def _method_summary(
    spec: BenchmarkSpec,
    methods: Mapping[str, MethodSpec],
    rows: list[dict[str, Any]],
    boots: Mapping[tuple[str, str, str, str], np.ndarray],
    costs: Mapping[str, dict[str, float]],
) -> list[dict[str, Any]]:
    """Per method: mean AUROC (validation, test) with bootstrap intervals, pairs won
    against the baseline, and the mean difference to it with its paired interval."""
    pairs = spec.pair_list()
    test = {(r["in_dist"], r["ood"], r["method"]): r for r in rows if r["split"] == "test"}
    summary = []
    for m, method in methods.items():
        mean_boot = np.mean([boots["test", a, b, m] for a, b in pairs], axis=0)
        diff_boot = mean_boot - np.mean(
            [boots["test", a, b, spec.baseline] for a, b in pairs], axis=0
        )
        aurocs = [test[a, b, m]["auroc"] for a, b in pairs]
        base = [test[a, b, spec.baseline]["auroc"] for a, b in pairs]
        validation = [r["auroc"] for r in rows if r["split"] == "validation" and r["method"] == m]
        summary.append(
            {
                "method": m,
                "label": method.label or m,
                "test_auroc": float(np.mean(aurocs)),
                "test_auroc_interval": percentile_interval(mean_boot),
                "validation_auroc": float(np.mean(validation)),
                "test_fpr95": float(np.mean([test[a, b, m]["fpr95"] for a, b in pairs])),
                "wins_vs_baseline": int(sum(x > y for x, y in zip(aurocs, base, strict=True))),
                "diff_vs_baseline": float(np.mean(aurocs) - np.mean(base)),
                "diff_interval": percentile_interval(diff_boot),
                **costs[m],
            }
        )
    return summary
