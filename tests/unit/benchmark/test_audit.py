"""The audit accuracy table: truth and estimates per contamination rate."""

from __future__ import annotations

import numpy as np
import pytest

from diffpath.benchmark.audit import audit_accuracy
from tests.unit.benchmark import random_features, small_spec


def test_audit_accuracy_reports_truth_and_estimates_per_rate(tmp_path) -> None:
    spec = small_spec(tmp_path, audit={"clean": "a", "contaminants": ["b"], "rates": [0.0, 0.1]})
    rng = np.random.default_rng(2)
    features = {
        (s, r, "diffpath6d"): random_features(rng, 0 if s == "a" else 3, 400, d=6)
        for s in "ab"
        for r in ("fit", "validation", "test")
    }
    rows = audit_accuracy(spec, "diffpath6d", features, "gaussian")
    assert [r["estimator"] for r in rows] == ["storey (reference)", "mixture (no reference)"] * 2
    clean, dirty = rows[:2], rows[2:]
    assert all(r["rate"] == 0 and r["detection_auroc"] is None for r in clean)
    assert clean[0]["estimated_contamination"] < 0.08
    assert "one group" in clean[1]["contamination_undetermined"]
    for r in dirty:  # Storey's π0 from 444 images and 400 calibration scores: SE ≈ 0.05
        assert r["rate"] == pytest.approx(0.1, abs=0.01) and r["detection_auroc"] > 0.99
        assert r["contamination_low"] <= r["rate"] <= r["contamination_high"]
        assert abs(r["estimated_contamination"] - r["rate"]) < 0.12
        assert r["precision"] >= 0.5  # the suspects are the top-scored estimated count
