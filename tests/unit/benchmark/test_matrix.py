"""The matrix: bootstrap intervals paired across methods, choice on validation, order."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from diffpath.benchmark.matrix import evaluate_matrix, resample
from diffpath.scoring.metrics import auroc, bootstrap_aurocs
from tests.unit.benchmark import random_features, small_spec


def test_bootstrap_centres_on_the_auroc_and_pairs_methods() -> None:
    rng = np.random.default_rng(0)
    id_s, ood_s = rng.normal(0, 1, 300), rng.normal(1, 1, 200)
    id_index, ood_index = resample(3, "test", "a", 300, 2000), resample(3, "test", "b", 200, 2000)
    boot = bootstrap_aurocs(id_s, ood_s, id_index, ood_index)
    assert abs(boot.mean() - auroc(id_s, ood_s)) < 0.005
    low, high = np.quantile(boot, [0.025, 0.975])
    assert 0.02 < high - low < 0.12  # ~ 4 standard errors of an AUROC from 500 scores
    # one set's images are resampled once, whichever pair or method scores them
    np.testing.assert_array_equal(id_index, resample(3, "test", "a", 300, 2000))
    np.testing.assert_array_equal(boot, bootstrap_aurocs(id_s + 5, ood_s + 5, id_index, ood_index))
    # the parts of a seed are kept apart: ("1", "2") is not ("12",)
    assert not np.array_equal(resample(1, "test", "ab", 50, 5), resample(1, "testa", "b", 50, 5))


def test_matrix_measures_each_pair_and_chooses_on_validation(tmp_path) -> None:
    spec = small_spec(tmp_path, bootstrap=200)
    rng = np.random.default_rng(1)
    good = {
        (s, r): random_features(rng, 0 if s == "a" else 3)
        for s in "ab"
        for r in ("fit", "validation", "test")
    }
    blind = {(s, r): random_features(rng, 0) for s in "ab" for r in ("fit", "validation", "test")}
    features = {(s, r, "v2"): v for (s, r), v in good.items()}
    features |= {(s, r, "diffpath6d"): v for (s, r), v in blind.items()}
    costs = {m: {"unet_evals": 10, "seconds": 1.0} for m in spec.methods}
    matrix = evaluate_matrix(spec, spec.methods, features, costs)
    assert len(matrix.rows) == 2 * 2 * 2  # splits × pairs × methods
    by = {(r["split"], r["in_dist"], r["method"]): r["auroc"] for r in matrix.rows}
    assert by["test", "a", "v2"] > 0.95 and abs(by["test", "a", "diffpath6d"] - 0.5) < 0.15
    assert matrix.chosen == "v2"
    v2 = next(m for m in matrix.methods if m["method"] == "v2")
    assert v2["wins_vs_baseline"] == 2 and v2["diff_interval"][0] > 0.2
    assert matrix.scores.num_rows == 2 * 2 * 2 * 2 * 120  # methods × in-dists × splits × sets


@pytest.mark.slow  # four subprocesses
def test_score_rows_come_in_pair_order_whatever_the_hash_seed(tmp_path) -> None:
    """scores.parquet lists each in-distribution set, then its OOD sets in pair order, in
    every process (a set's iteration order once depended on PYTHONHASHSEED)."""
    script = f"""
import numpy as np, pathlib
from tests.unit.benchmark import random_features, small_spec
spec = small_spec(pathlib.Path({str(tmp_path)!r}), bootstrap=100)
rng = np.random.default_rng(0)
features = {{(s, r, m): random_features(rng, 0, 5) for s in "ab" for r in ("fit", "validation",
    "test") for m in spec.methods}}
costs = {{m: {{"unet_evals": 1, "seconds": 0.0}} for m in spec.methods}}
scores = evaluate_matrix(spec, spec.methods, features, costs).scores
print([tuple(r.values()) for r in scores.select(["method", "in_dist", "split", "dataset"])
    .to_pylist()][::5])
"""
    script = "from diffpath.benchmark.matrix import evaluate_matrix" + script
    orders = {
        subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in range(4)
    }
    assert len(orders) == 1
    datasets = [row[3] for row in eval(orders.pop())]
    assert datasets[:4] == ["a", "b", "a", "b"]  # in-dist a: its own set first, then b
