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
    assert dirty.suspects[1800:].mean() > 0.9  # Benjamini–Hochberg at 10%: few false ones
    assert dirty.suspects[:1800].sum() <= 0.2 * dirty.suspects.sum() and dirty.fdr == 0.1


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
    found = [e.fraction for e in estimates if e.fraction is not None]
    assert len(found) >= 0.97 * len(estimates)  # the shift test's false alarms: about 1%
    assert np.mean(found) == pytest.approx(0.3, abs=0.02)
    assert 0.3 < estimates[0].detectable < 0.9  # 10 calibration scores resolve little


@pytest.mark.parametrize("shift", [0.5, -0.5])
def test_storey_is_undetermined_when_the_in_distribution_part_is_shifted(shift) -> None:
    """In-distribution images unlike the calibration's (other identities, another camera):
    Storey's π0 moves a long way (here 0.5 SD reads 13% as about 50%), so no number."""
    rng = np.random.default_rng(0)
    calibration = rng.normal(size=400)
    scores = np.r_[rng.normal(shift, 1, 870), rng.normal(6, 1, 130)]
    shifted = storey_estimate(scores, calibration, n_boot=10)
    assert shifted.fraction is None and "not exchangeable" in shifted.reason
    assert ("higher" if shift > 0 else "lower") in shifted.reason and shifted.shift_p < 0.01
    assert shifted.suspects[870:].all()  # the contaminants are still listed


def test_storey_needs_enough_calibration_groups_and_resamples_them_whole() -> None:
    """The issue's reference: 80 calibration faces of 3 identities read 13% as 67%
    [37%, 79%]. Too few groups is undetermined; enough gives a wider, group-aware interval."""
    rng = np.random.default_rng(0)
    effects = rng.normal(0, 0.5, 60)  # each group (identity) shifts its scores
    groups = np.repeat(np.arange(60), 10)
    calibration = effects[groups] + rng.normal(size=600)
    new_groups = np.repeat(rng.normal(0, 0.5, 87), 10)  # the audited set's own groups
    scores = np.r_[new_groups + rng.normal(size=870), rng.normal(6, 1, 130)]
    few = storey_estimate(scores, calibration[:30], groups=groups[:30], n_boot=50)
    assert few.fraction is None and "only 3 groups" in few.reason
    grouped = storey_estimate(scores, calibration, groups=groups, n_boot=200)
    by_image = storey_estimate(scores, calibration, n_boot=200)
    assert grouped.fraction == by_image.fraction
    assert grouped.high - grouped.low > 1.15 * (by_image.high - by_image.low)


def test_storey_warns_when_too_many_p_values_are_large() -> None:
    """More large p-values than any clean set gives cannot be contamination: the set is not
    exchangeable with the calibration images, and the estimate is biased low (it says so)."""
    rng = np.random.default_rng(0)
    calibration = rng.normal(size=800)
    below_median = rng.normal(size=3000)
    low = storey_estimate(below_median[below_median < 0][:1000], calibration, n_boot=10)
    assert low.fraction == 0.0 and "not exchangeable" in low.warning
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


def test_a_reason_shows_digits_that_stay_true() -> None:
    from diffpath.scoring.contamination import truncated

    assert truncated(1.996) == "1.99" and truncated(2.0) == "2.00" and truncated(0.5) == "0.50"
