"""The flagging rule chosen at screening time, alert reasons, and the calibration split."""

from __future__ import annotations

import numpy as np
import pytest

from diffpath.config import FeatureConfig
from diffpath.errors import ConfigError
from diffpath.scoring.alerts import ScreenPolicy, alert_reasons, flag_rule
from diffpath.scoring.conformal import conformal_p_values
from diffpath.scoring.reference import fit_reference, split_holdout


def test_threshold_from_the_reference_an_fpr_or_a_value() -> None:
    rng = np.random.default_rng(1)
    reference = fit_reference(
        rng.normal(size=(500, 6)), FeatureConfig(method="diffpathv2"), "m", target_fpr=0.05
    )  # 100 calibration scores: the conformal threshold flags ⌊0.05 · 101⌋ / 101 of them
    rule = flag_rule(reference, ScreenPolicy())
    assert (rule.threshold, rule.rank, rule.rate) == (reference.threshold, 96, 5 / 101)
    loose = flag_rule(reference, ScreenPolicy(fpr=0.2))
    assert loose.threshold < reference.threshold and loose.rate == 20 / 101
    p = conformal_p_values(reference.calibration_scores, reference.calibration_scores)
    assert np.sum(reference.calibration_scores > loose.threshold) == np.sum(p <= 0.2) == 19
    chosen = flag_rule(reference, ScreenPolicy(threshold=1e9))
    assert (chosen.threshold, chosen.rate) == (1e9, 1 / 101)  # the α a threshold holds
    with pytest.raises(ConfigError, match=r"100 calibration images cannot flag at 0\.005"):
        flag_rule(reference, ScreenPolicy(fpr=0.005))


def test_alert_reasons_from_the_flagged_count_and_fractions() -> None:
    summary = {
        "n_images": 130,
        "n_scored": 100,
        "n_flagged": 42,
        "n_errors": 30,
        "error_fraction": 30 / 130,
        "flagged_fraction": 0.42,
        "flagged_p_value": 1e-21,
        "expected_flagged_range": [1, 11],
    }
    assert alert_reasons(summary, ScreenPolicy()) == []
    reasons = alert_reasons(summary, ScreenPolicy(alert_p=0.01, fail_above=0.1, max_errors=0.1))
    assert len(reasons) == 3 and "23.1% unreadable" in reasons[0]
    assert (
        reasons[1] == "42 flagged where in-distribution images give 1–11 (95%): p = 1e-21, "
        "at most --alert-p 0.01"
    )
    assert "42.0% flagged" in reasons[2]
    assert alert_reasons({**summary, "flagged_p_value": 0.02}, ScreenPolicy(alert_p=0.01)) == []
    nothing = {**summary, "n_scored": 0, "flagged_fraction": 0.0, "flagged_p_value": None}
    assert alert_reasons(nothing, ScreenPolicy(alert_p=0.01))[0].startswith("no image could be")
    empty = {**nothing, "n_images": 0, "n_errors": 0, "error_fraction": 0.0}
    assert alert_reasons(empty, ScreenPolicy())[0].startswith("the sources hold no images")


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
