"""Conformal calibration: one threshold rule, the p-values it agrees with, and the law of
the number flagged.

n calibration scores of held-back in-distribution images, sorted c(1) ≤ … ≤ c(n). A new
image exchangeable with them is flagged by the threshold c(k) with probability
(n + 1 − k) / (n + 1). Given the calibration set, that rate is itself random,
Beta(n + 1 − k, k), so the number flagged among m new images is Beta-Binomial(m, n + 1 − k,
k), not Binomial(m, α): it is what makes a flagged count surprising or not. The conformal
rank for a target rate α is k = n + 1 − ⌊α(n + 1)⌋, which flags exactly the images whose
p-value is at most α.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import beta, betabinom, binom

from diffpath.errors import ConfigError

__all__ = [
    "FlagRule",
    "benjamini_hochberg",
    "calibrate_threshold",
    "conformal_p_values",
    "conformal_rank",
    "min_calibration",
    "threshold_rule",
]

REFERENCE_CONFIDENCE = 0.99  # share of references a per-reference guarantee holds for
EPS = 1e-9  # α(n + 1) a hair below an integer is that integer, as `p ≤ α` rounds it


def min_calibration(alpha: float) -> int:
    """The fewest calibration scores that can flag anything at rate `alpha`."""
    return math.ceil(1 / alpha - EPS) - 1


def conformal_rank(n: int, alpha: float) -> int:
    """k = n + 1 − ⌊α(n + 1)⌋: the order statistic c(k) of n calibration scores that flags
    a new in-distribution score with probability at most α (and p ≤ α ⇔ score > c(k))."""
    if not 0 < alpha < 1:
        raise ConfigError(f"the target flag rate must be in (0, 1), got {alpha}")
    rank = n + 1 - math.floor(alpha * (n + 1) + EPS)
    if rank > n:
        raise ConfigError(
            f"{n} calibration images cannot flag at {alpha:.3g}: that needs at least "
            f"{min_calibration(alpha)}; give more reference images, a larger --holdout or a "
            "larger --target-fpr/--fpr"
        )
    return rank


def calibrate_threshold(calibration: np.ndarray, alpha: float = 0.05) -> float:
    """The conformal threshold: flags (score > it) a new in-distribution image with
    probability at most `alpha`, exactly those with `conformal_p_values ≤ alpha`."""
    scores = np.sort(np.asarray(calibration, float))
    return float(scores[conformal_rank(len(scores), alpha) - 1])


def conformal_p_values(scores: np.ndarray, calibration: np.ndarray) -> np.ndarray:
    """(1 + #{calibration scores ≥ s}) / (n + 1) for each score s: for an in-distribution
    image exchangeable with the calibration images, P(p ≤ α) ≤ α."""
    calibration = np.sort(np.asarray(calibration, float))
    if len(calibration) == 0:
        raise ConfigError("p-values need calibration scores")
    at_least = len(calibration) - np.searchsorted(calibration, np.asarray(scores, float), "left")
    return (1 + at_least) / (len(calibration) + 1)


def benjamini_hochberg(p_values: np.ndarray, q: float = 0.1) -> np.ndarray:
    """The images Benjamini–Hochberg selects at false-discovery rate `q` (bool per p-value):
    the k smallest, k the largest with p(k) ≤ q·k/m. On conformal p-values, which share
    one calibration set, the expected share of in-distribution images among them is at
    most q (Bates et al. 2023, "Testing for outliers with conformal p-values")."""
    if not 0 < q < 1:
        raise ConfigError(f"the false-discovery rate must be in (0, 1), got {q}")
    p = np.asarray(p_values, float)
    order = np.argsort(p, kind="stable")
    passing = np.nonzero(p[order] <= q * np.arange(1, len(p) + 1) / max(len(p), 1))[0]
    selected = np.zeros(len(p), bool)
    if len(passing):
        selected[order[: passing[-1] + 1]] = True
    return selected


@dataclass(frozen=True)
class FlagRule:
    """A threshold and where it falls among n calibration scores: k of them are at or
    below it, so it flags an in-distribution image with probability `rate`."""

    threshold: float
    rank: int
    n: int

    @property
    def rate(self) -> float:
        """(n + 1 − k) / (n + 1): the in-distribution flag rate this threshold holds."""
        return (self.n + 1 - self.rank) / (self.n + 1)

    def count_quantile(self, m: int, q: float) -> int:
        """The q-quantile of the number flagged among m in-distribution images."""
        if self.rank == 0:
            return m
        return int(betabinom.ppf(q, m, self.n + 1 - self.rank, self.rank))

    def expected(self, m: int) -> tuple[float, int, int]:
        """(mean, 2.5%, 97.5% quantile) of the number flagged among m in-distribution images."""
        mean = m * (self.n + 1 - self.rank) / (self.n + 1)  # one rounding: 6.0, not 5.999…
        return mean, self.count_quantile(m, 0.025), self.count_quantile(m, 0.975)

    def rate_bound(self, confidence: float = REFERENCE_CONFIDENCE) -> float:
        """An upper bound on this threshold's true in-distribution flag rate, right for
        `confidence` of calibration sets: the quantile of its law Beta(n + 1 − k, k)."""
        return (
            1.0
            if self.rank == 0
            else float(beta.ppf(confidence, self.n + 1 - self.rank, self.rank))
        )

    def p_value(self, n_flagged: int, m: int, per: str = "night") -> float:
        """How surprising n_flagged of m flagged is if all m are in-distribution.

        per="night": P(≥ n_flagged) over the calibration draw too (Beta-Binomial): a test
        at level P alerts on at most P of clean nights, counted over references — but one
        reference whose rate came out high alerts on nearly every large clean night.
        per="reference": P(≥ n_flagged) at `rate_bound` (Binomial): for 99% of references,
        every clean night alerts with probability at most P; less power on large nights."""
        if self.rank == 0 or n_flagged <= 0:
            return 1.0
        if per == "reference":
            return float(binom.sf(n_flagged - 1, m, self.rate_bound()))
        return float(betabinom.sf(n_flagged - 1, m, self.n + 1 - self.rank, self.rank))


def threshold_rule(calibration: np.ndarray, threshold: float) -> FlagRule:
    """The `FlagRule` of any threshold (a calibrated one, or one a person chose)."""
    calibration = np.asarray(calibration, float)
    rank = int(np.sum(calibration <= threshold))
    return FlagRule(threshold=float(threshold), rank=rank, n=len(calibration))
