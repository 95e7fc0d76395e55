"""Regressions against an earlier run: a drop beyond the tolerance names its pair."""

from __future__ import annotations

from diffpath.benchmark.regressions import compare


def test_a_drop_beyond_tolerance_is_a_regression_naming_the_pair() -> None:
    now = [
        {
            "split": "test",
            "in_dist": "a",
            "ood": "b",
            "method": "m",
            "auroc": 0.90,
            "auroc_high": 0.92,
        },
        {
            "split": "test",
            "in_dist": "b",
            "ood": "a",
            "method": "m",
            "auroc": 0.80,
            "auroc_high": 0.86,
        },
    ]
    before = [
        {**now[0], "auroc": 0.95},  # dropped 0.05 > max(0.01, 0.02)
        {**now[1], "auroc": 0.84},  # dropped 0.04 < the interval's upper half, 0.06
    ]
    deltas, regressions = compare(now, before, 0.01)
    assert len(deltas) == 2 and [d["regression"] for d in deltas] == [True, False]
    assert regressions == ["m: a vs b AUROC 0.950 -> 0.900 (drop 0.050 > allowed 0.020)"]
    assert compare(now, [{**now[0], "auroc": 0.905}], 0.01)[1] == []
