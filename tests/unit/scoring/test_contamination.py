"""Contamination estimates: Storey with a reference, the mixture without one."""

from __future__ import annotations

import numpy as np
import pytest

from diffpath.scoring.contamination import mixture_estimate, storey_estimate


def test_storey_estimate_is_near_zero_on_clean_and_near_truth_when_contaminated() -> None:
    rng = np.random.default_rng(0)
    calibration = rng.normal(size=1000)
    clean = storey_estimate(rng.normal(size=2000), calibration)
    assert clean.fraction < 0.05 and clean.low <= clean.fraction <= clean.high
    scores = np.r_[rng.normal(size=1800), rng.normal(6, 1, 200)]  # 10% clear outliers
    dirty = storey_estimate(scores, calibration)
    assert abs(dirty.fraction - 0.1) < 0.08 and dirty.low < 0.1 < dirty.high
    assert dirty.suspects.sum() == round(dirty.fraction * 2000)  # the top estimated count
    assert dirty.suspects[1800:].mean() > 0.9 and dirty.suspects[:1800].mean() < 0.08


def test_storey_estimate_uses_the_exact_null_rate_of_conformal_p_values() -> None:
    """With 10 calibration scores P(p > ½ | clean) is 6/11, not ½: 30% of clear outliers
    are then estimated as 30% on average (the ½ rule gave 24%)."""
    rng = np.random.default_rng(0)
    estimates = [
        storey_estimate(
            np.r_[rng.normal(size=700), rng.normal(9, 1, 300)], rng.normal(size=10), n_boot=1
        )
        for _ in range(300)
    ]
    assert np.mean([e.fraction for e in estimates]) == pytest.approx(0.3, abs=0.02)
    assert 0.3 < estimates[0].detectable < 0.9  # 10 calibration scores resolve little


def test_storey_warns_when_the_set_scores_lower_than_its_calibration_images() -> None:
    """More large p-values than any clean set gives cannot be contamination: the set is not
    exchangeable with the calibration images, and the estimate is biased low (it says so)."""
    rng = np.random.default_rng(0)
    calibration = rng.normal(size=800)
    shifted = storey_estimate(rng.normal(-0.3, 1, 1000), calibration, n_boot=10)
    assert shifted.fraction == 0.0 and "not exchangeable" in shifted.warning
    contaminated = np.r_[rng.normal(size=700), rng.normal(5, 1, 300)]
    assert storey_estimate(contaminated, calibration, n_boot=10).warning is None


def test_mixture_estimate_finds_a_separate_upper_component_only_when_there_is_one() -> None:
    rng = np.random.default_rng(0)
    clean = rng.chisquare(6, 1000)  # NLL-like: right-skewed, one population
    one = mixture_estimate(clean, n_boot=20)
    assert one.fraction is None and "one group" in one.reason and not one.suspects.any()
    dirty = np.r_[clean[:900], rng.normal(60, 5, 100)]
    estimate = mixture_estimate(dirty, n_boot=20)
    assert abs(estimate.fraction - 0.1) < 0.03 and estimate.suspects[900:].mean() > 0.9
    lowest = mixture_estimate(np.r_[dirty, -1e6], n_boot=20)  # one score far below the rest
    assert lowest.fraction == pytest.approx(estimate.fraction, abs=0.01)


def test_mixture_estimate_says_undetermined_rather_than_zero_when_most_are_contaminated() -> None:
    rng = np.random.default_rng(0)
    mostly_bad = np.r_[rng.chisquare(6, 400), rng.normal(60, 5, 600)]
    estimate = mixture_estimate(mostly_bad, n_boot=20)
    assert estimate.fraction is None and "would hold 60%" in estimate.reason
    assert estimate.as_dict()["estimated_contamination"] is None
