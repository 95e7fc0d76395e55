"""Conformal p-values, the flagging rule chosen at screening time, and alert reasons."""

from __future__ import annotations

import numpy as np
import pytest

from diffpath.alerts import ScreenPolicy, alert_reasons, flag_threshold, flagged_p_value
from diffpath.config import FeatureConfig
from diffpath.errors import ConfigError
from diffpath.metrics import conformal_p_values
from diffpath.reference import fit_reference, split_holdout


def test_conformal_p_values_count_calibration_scores_at_least_as_large() -> None:
    calibration = np.array([1.0, 2.0, 3.0, 4.0])
    p = conformal_p_values(np.array([0.5, 2.0, 3.5, 9.0]), calibration)
    np.testing.assert_allclose(p, [5 / 5, 4 / 5, 2 / 5, 1 / 5])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_p_values_of_exchangeable_scores_are_uniform(seed) -> None:
    """Calibration and test scores from one distribution: the fraction with p ≤ α stays
    within 3 binomial standard errors of α (test and calibration sampling both counted)."""
    rng = np.random.default_rng(seed)
    n_test, n_cal = 20000, 1999
    p = conformal_p_values(rng.normal(size=n_test), rng.normal(size=n_cal))
    for alpha in (0.01, 0.05, 0.2):
        se = np.sqrt(alpha * (1 - alpha) * (1 / n_test + 1 / n_cal))
        assert abs(np.mean(p <= alpha) - alpha) < 3 * se


def test_threshold_from_the_reference_an_fpr_or_a_value() -> None:
    rng = np.random.default_rng(1)
    reference = fit_reference(
        rng.normal(size=(500, 6)), FeatureConfig(method="diffpathv2"), "m", target_fpr=0.05
    )
    assert flag_threshold(reference, ScreenPolicy()) == (reference.threshold, 0.05)
    loose, expected = flag_threshold(reference, ScreenPolicy(fpr=0.2))
    assert loose < reference.threshold and expected == 0.2
    assert np.mean(reference.calibration_scores > loose) <= 0.2
    value, expected = flag_threshold(reference, ScreenPolicy(threshold=1e9))
    assert (value, expected) == (1e9, 0.0)


def test_binomial_p_value_and_alert_reasons() -> None:
    assert flagged_p_value(5, 100, 0.05) == pytest.approx(0.564, abs=1e-3)
    assert flagged_p_value(42, 100, 0.05) < 1e-20
    assert flagged_p_value(0, 0, 0.05) is None
    summary = {
        "n_scored": 100,
        "n_errors": 30,
        "error_fraction": 30 / 130,
        "flagged_fraction": 0.42,
        "flagged_p_value": 1e-21,
    }
    assert alert_reasons(summary, ScreenPolicy()) == []
    reasons = alert_reasons(summary, ScreenPolicy(fail_above=0.1, max_errors=0.1))
    assert len(reasons) == 2 and "23.1% unreadable" in reasons[0] and "42.0% flagged" in reasons[1]
    nothing = {**summary, "n_scored": 0, "flagged_fraction": 0.0, "flagged_p_value": None}
    assert alert_reasons(nothing, ScreenPolicy())[0].startswith("no image could be scored")


def test_holdout_keeps_whole_groups_together() -> None:
    groups = np.repeat([f"id{i}" for i in range(30)], np.arange(1, 31))  # sizes 1..30
    fit_rows, cal_rows = split_holdout(len(groups), 0.2, 0, groups)
    assert not set(groups[fit_rows]) & set(groups[cal_rows])
    assert len(fit_rows) + len(cal_rows) == len(groups)
    assert 0.2 <= len(cal_rows) / len(groups) < 0.35  # the last group drawn overshoots
    random_fit, random_cal = split_holdout(len(groups), 0.2, 0)
    assert len(random_cal) == round(0.2 * len(groups)) and set(groups[random_fit]) & set(
        groups[random_cal]
    )
    with pytest.raises(ConfigError, match="groups"):
        split_holdout(10, 0.2, 0, np.array(["one"] * 10))
    reference = fit_reference(
        np.random.default_rng(0).normal(size=(len(groups), 6)),
        FeatureConfig(method="diffpathv2"),
        "m",
        groups=groups,
        split="group:id",
    )
    assert reference.split == "group:id" and reference.n_fit == len(fit_rows)
