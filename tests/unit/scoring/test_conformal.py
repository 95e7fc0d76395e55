"""The conformal quantile, the p-values it agrees with, and the law of the flagged count,
pinned on small cases that can be counted by hand or by enumeration."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from diffpath.errors import ConfigError
from diffpath.scoring.conformal import (
    FlagRule,
    calibrate_threshold,
    conformal_p_values,
    conformal_rank,
    min_calibration,
    threshold_rule,
)


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


def test_the_conformal_rank_is_n_plus_one_minus_the_floor_of_alpha_n_plus_one() -> None:
    scores = np.arange(1.0, 21.0)  # n = 20 at 5%: ⌊1.05⌋ = 1, so c(20), the largest
    assert conformal_rank(20, 0.05) == 20 and calibrate_threshold(scores, 0.05) == 20.0
    assert conformal_rank(19, 0.05) == 19  # α(n + 1) = 1 exactly: still one flag's worth
    assert conformal_rank(39, 0.05) == 38 and calibrate_threshold(np.arange(1.0, 40.0)) == 38.0
    assert conformal_rank(99, 0.29) == 71  # 0.29 · 100 is 28.999… in floating point
    assert min_calibration(0.05) == 19 and min_calibration(0.01) == 99
    with pytest.raises(ConfigError, match=r"18 calibration images cannot flag at 0\.05"):
        conformal_rank(18, 0.05)


@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.1, 0.29, 0.3, 0.57])
def test_flagged_exactly_when_p_value_at_most_alpha_on_the_boundary(alpha) -> None:
    """Scores on, just above and just below every calibration score, for every n up to 300:
    score > calibrated threshold ⇔ conformal p-value ≤ α."""
    rng = np.random.default_rng(0)
    for n in range(min_calibration(alpha), 301):
        calibration = np.round(rng.normal(size=n), 2)  # ties included
        scores = np.r_[calibration, np.nextafter(calibration, np.inf), calibration - 1e-9]
        flagged = scores > calibrate_threshold(calibration, alpha)
        np.testing.assert_array_equal(flagged, conformal_p_values(scores, calibration) <= alpha)


def test_the_flag_rate_of_a_threshold_is_its_rank_among_calibration_scores() -> None:
    calibration = np.arange(1.0, 10.0)  # n = 9
    assert threshold_rule(calibration, 9.0).rate == pytest.approx(1 / 10)
    assert threshold_rule(calibration, 6.5).rate == pytest.approx(4 / 10)  # 3 above, + 1
    assert threshold_rule(calibration, 0.0).rate == 1.0
    assert threshold_rule(calibration, 0.0).p_value(7, 7) == 1.0  # all flagged is expected


def _enumerated_law(n: int, m: int, k: int) -> np.ndarray:
    """P(j of m new scores above the k-th smallest of n calibration scores), counting every
    ordering of n + m exchangeable distinct scores as equally likely."""
    counts = np.zeros(m + 1)
    for order in itertools.permutations(range(n + m)):
        calibration, new = np.array(order[:n]), np.array(order[n:])
        counts[np.sum(new > np.sort(calibration)[k - 1])] += 1
    return counts / math.factorial(n + m)


@pytest.mark.parametrize(("n", "m"), [(3, 2), (4, 3), (2, 4)])
def test_the_flagged_count_is_beta_binomial_by_enumeration(n, m) -> None:
    for k in range(1, n + 1):
        law = _enumerated_law(n, m, k)
        rule = FlagRule(threshold=float(k), rank=k, n=n)
        for j in range(m + 1):
            assert rule.p_value(j, m) == pytest.approx(law[j:].sum(), abs=1e-12)
        assert rule.expected(m)[0] == pytest.approx(np.dot(np.arange(m + 1), law))


def test_a_clean_dump_of_100k_does_not_alert_where_the_binomial_test_did() -> None:
    """200 clean nights of 100,000 images against 200 calibration scores: the Beta-Binomial
    p-value is below 0.01 about 1% of the time; the binomial one at α was in half of them."""
    from scipy.stats import binom

    rng = np.random.default_rng(0)
    ours, binomial = [], []
    for _ in range(200):
        calibration = rng.normal(size=200)
        rule = threshold_rule(calibration, calibrate_threshold(calibration, 0.05))
        n_flagged = int(np.sum(rng.normal(size=100_000) > rule.threshold))
        ours.append(rule.p_value(n_flagged, 100_000))
        binomial.append(binom.sf(n_flagged - 1, 100_000, 0.05))
    assert np.mean(np.array(ours) <= 0.01) <= 0.03
    assert np.mean(np.array(binomial) <= 0.01) > 0.3


def test_benjamini_hochberg_on_conformal_p_values_holds_its_false_discovery_rate() -> None:
    """Outliers among in-distribution images: the share of in-distribution images among
    those selected at q stays at most q on average, one calibration set per night."""
    from diffpath.scoring.conformal import benjamini_hochberg

    rng = np.random.default_rng(0)
    shares, found = [], []
    for _ in range(400):
        calibration = rng.normal(size=200)
        scores = np.r_[rng.normal(size=450), rng.normal(3, 1, 50)]
        selected = benjamini_hochberg(conformal_p_values(scores, calibration), 0.1)
        shares.append(selected[:450].sum() / max(1, selected.sum()))
        found.append(selected[450:].mean())
    assert np.mean(shares) <= 0.1 + 0.01 and np.mean(found) > 0.3
    assert not benjamini_hochberg(np.array([0.5, 0.9]), 0.1).any()
    assert benjamini_hochberg(np.array([0.01, 0.02, 0.9]), 0.1).tolist() == [True, True, False]
    with pytest.raises(ConfigError, match="false-discovery"):
        benjamini_hochberg(np.array([0.1]), 1.5)


def test_alerts_per_reference_hold_for_each_kept_reference() -> None:
    """One reference kept for months: with per="reference", at most about 1% of references
    alert on more than 1% of their clean nights, at every dump size; per="night" holds 1% of
    nights over references but not per reference (13% of references at n = m = 1000)."""
    from scipy.stats import binom

    rng = np.random.default_rng(0)
    n, m, alpha_p = 1000, 1000, 0.01
    rule = FlagRule(threshold=0.0, rank=conformal_rank(n, 0.05), n=n)
    rates = rng.beta(n + 1 - rule.rank, rule.rank, 4000)  # each reference's true flag rate
    over = {}
    for per in ("night", "reference"):
        first = next(c for c in range(m + 1) if rule.p_value(c, m, per) <= alpha_p)
        over[per] = np.mean(binom.sf(first - 1, m, rates) > alpha_p)
    assert over["reference"] <= 0.013 < 0.05 < over["night"]
    assert rule.p_value(0, m, "reference") == 1.0 and 0.05 < rule.rate_bound() < 0.07


def test_the_expected_count_is_exact_when_it_is_a_whole_number() -> None:
    """`expected_flagged: 5.999999999999999` was m · rate rounded twice."""
    for n in range(19, 200):
        for k in range(1, n + 1):
            for m in (10, 30, 100, 120):
                whole, rest = divmod(m * (n + 1 - k), n + 1)
                if not rest:
                    assert FlagRule(threshold=0.0, rank=k, n=n).expected(m)[0] == whole
