"""How much of a set does not belong: contamination estimates with intervals, and suspects.

With a trusted reference, each image has a conformal p-value; Storey's estimator reads the
in-distribution share π0 off the flat part of their histogram (#{p > λ} over its exact
expectation for a clean set). That part is flat only when the set's in-distribution images
are exchangeable with the calibration images: a two-sample test of the scores below the
λ threshold (the set's against the calibration's) catches a shifted null, and the estimate
is then undetermined, with the reason. Suspects are the images Benjamini–Hochberg selects
at a stated false-discovery rate. Without a reference, images are scored by trimmed
cross-fitting and the scores are fitted with one and with two Gaussian components (on log
scores); where BIC clearly prefers two and they are two populations (Ashman's D ≥ 2), the
upper component's weight is the estimate, else it is undetermined, with the reason; the
suspects are the estimated number of highest-scoring images. Bias and coverage: docs/statistics.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import mannwhitneyu
from sklearn.mixture import GaussianMixture

from diffpath.errors import ConfigError
from diffpath.scoring.conformal import (
    FlagRule,
    benjamini_hochberg,
    conformal_p_values,
    conformal_rank,
)
from diffpath.scoring.density import make_density
from diffpath.scoring.metrics import percentile_interval
from diffpath.scoring.reference import Reference

__all__ = [
    "Estimate",
    "audit_scores",
    "detectable_contamination",
    "mixture_estimate",
    "shift_test",
    "storey_estimate",
]

BIC_MARGIN = 10.0  # "very strong" evidence (Kass & Raftery) before calling a second component
SEPARATION = 2.0  # Ashman's D: two Gaussians at least this far apart are two populations
TRIM = 0.8  # trimmed cross-fitting: the second pass fits on the lowest-scoring 80%
LAMBDA = 0.5  # Storey's λ: p-values above it are counted as in-distribution
FDR = 0.1  # suspects: the expected share of in-distribution images among them
SHIFT_P = 0.01  # below this, the in-distribution part of a set is not the calibration's
# Fewer calibration groups than this leave the estimate at the mercy of which were held
# back: on real faces, 3 to 15 held-back identities gave errors up to 0.38 and 85-90%
# coverage; 45-50 gave at most 0.13 and ~93% (docs/statistics.md).
MIN_GROUPS = 20


@dataclass(frozen=True)
class Estimate:
    """An estimated contaminated fraction with a bootstrap 95% interval, and the suspects;
    `fraction` is None, with the `reason`, where the data cannot determine one."""

    fraction: float | None
    low: float | None
    high: float | None
    suspects: np.ndarray  # bool per image
    method: str
    detectable: float | None = None  # 95% of clean sets of this size estimate at most this
    reason: str | None = None
    warning: str | None = None
    fdr: float | None = None  # the false-discovery rate the suspects were selected at
    shift_p: float | None = None  # two-sample p-value of the in-distribution-looking part

    def as_dict(self) -> dict[str, float | int | str | None]:
        return {
            "estimated_contamination": self.fraction,
            "contamination_low": self.low,
            "contamination_high": self.high,
            "detectable_contamination": self.detectable,
            "contamination_undetermined": self.reason,
            "n_suspects": int(self.suspects.sum()),
            "suspects_fdr": self.fdr,
            "shift_p_value": self.shift_p,
            "estimator": self.method,
        }


def _top(scores: np.ndarray, fraction: float) -> np.ndarray:
    """The round(fraction · n) highest scores (bool per score)."""
    flagged = np.zeros(len(scores), bool)
    flagged[
        np.argsort(-np.asarray(scores, float), kind="stable")[: round(fraction * len(scores))]
    ] = True
    return flagged


def _p_at_most(n: int, lam: float) -> FlagRule:
    """The rule `p ≤ λ` as a threshold rank among n calibration scores (its law when clean)."""
    return FlagRule(threshold=math.nan, rank=conformal_rank(n, lam), n=n)


def _storey(p_values: np.ndarray, n: int, lam: float) -> float:
    """1 − #{p > λ} / (m · P(p > λ | in-distribution)), clipped to [0, 1], with the exact
    null rate of conformal p-values from n calibration scores, 1 − ⌊λ(n + 1)⌋ / (n + 1)."""
    return float(max(0.0, 1 - np.mean(p_values > lam) / (1 - _p_at_most(n, lam).rate)))


def shift_test(
    scores: np.ndarray, calibration: np.ndarray, lam: float = LAMBDA
) -> tuple[float, float, float]:
    """Are the set's images with p > λ distributed as the calibration scores below the same
    threshold? (Mann–Whitney p-value, the two medians.) Both are draws of the score law
    truncated at the calibration's c(k) when the set's in-distribution images are
    exchangeable with the calibration images; contaminants, scoring high, barely enter."""
    calibration = np.sort(calibration)
    cut = calibration[conformal_rank(len(calibration), lam) - 1]
    low_set, low_cal = scores[scores < cut], calibration[calibration < cut]
    if min(len(low_set), len(low_cal)) < 5:
        return 1.0, math.nan, math.nan
    p = float(mannwhitneyu(low_set, low_cal).pvalue)
    return p, float(np.median(low_set)), float(np.median(low_cal))


def detectable_contamination(n: int, m: int, lam: float = LAMBDA) -> float:
    """The contamination Storey's estimate stays under for 95% of clean sets of m images
    against n calibration scores: smaller estimates are no evidence of contamination."""
    rule = _p_at_most(n, lam)
    return max(0.0, 1 - (m - rule.count_quantile(m, 0.95)) / (m * (1 - rule.rate)))


def _resample(
    calibration: np.ndarray, members: list[np.ndarray] | None, rng: np.random.Generator
) -> np.ndarray:
    """A bootstrap draw of the calibration scores: whole groups (`members`: each group's
    indices) where they are known, else single scores."""
    if members is None:
        return calibration[rng.integers(0, len(calibration), len(calibration))]
    drawn = rng.integers(0, len(members), len(members))
    return calibration[np.concatenate([members[i] for i in drawn])]


def storey_estimate(
    scores: np.ndarray,
    calibration: np.ndarray,
    lam: float = LAMBDA,
    n_boot: int = 500,
    seed: int = 0,
    fdr: float = FDR,
    groups: np.ndarray | None = None,
) -> Estimate:
    """1 − π0 from the conformal p-values of anomaly `scores` against a trusted reference's
    `calibration` scores; the interval resamples both — the calibration by whole `groups`
    when it was held back by group (which groups were held back is the larger error) —
    and `detectable` is what 95% of clean sets of these sizes stay under. Undetermined
    with fewer than `MIN_GROUPS` calibration groups, or when `shift_test` finds the set's
    in-distribution part unlike the calibration images (at `SHIFT_P`). Suspects:
    Benjamini–Hochberg at `fdr`."""
    scores, calibration = np.asarray(scores, float), np.asarray(calibration, float)
    if not len(scores):
        raise ConfigError("a contamination estimate needs at least one scored image")
    m, n = len(scores), len(calibration)
    p_values = conformal_p_values(scores, calibration)
    suspects = benjamini_hochberg(p_values, fdr)
    rule = _p_at_most(n, lam)
    detectable = detectable_contamination(n, m, lam)
    shift_p, set_median, cal_median = shift_test(scores, calibration, lam)
    found = {"method": "storey", "detectable": detectable, "fdr": fdr, "shift_p": shift_p}
    members = None if groups is None else [np.flatnonzero(groups == g) for g in np.unique(groups)]
    if members is not None and len(members) < MIN_GROUPS:
        reason = (
            f"the reference's calibration images come from only {len(members)} groups "
            f"(identities, sources): which groups were held back moves this estimate by up "
            f"to 40 points on real faces; refit the reference so that at least {MIN_GROUPS} "
            "groups are held back (more groups, or a larger --holdout)"
        )
        return Estimate(None, None, None, suspects, reason=reason, **found)
    if shift_p < SHIFT_P:
        side = "higher" if set_median > cal_median else "lower"
        reason = (
            f"the set's images that look in-distribution (p > {lam:g}) score {side} than the "
            f"reference's calibration images below the same threshold (medians "
            f"{set_median:.4g} vs {cal_median:.4g}, Mann–Whitney p = {shift_p:.2g}): its "
            "in-distribution images are not exchangeable with them (other identities, "
            "sources or capture), which moves Storey's estimate far from the truth; refit the "
            "reference on images like these, with more groups held back (--group-column)"
        )
        return Estimate(None, None, None, suspects, reason=reason, **found)
    fraction = _storey(p_values, n, lam)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        held = _resample(calibration, members, rng)
        draws.append(
            _storey(conformal_p_values(scores[rng.integers(0, m, m)], held), len(held), lam)
        )
    low, high = percentile_interval(np.asarray(draws))
    at_most = int(np.sum(p_values <= lam))
    warning = None
    if at_most < rule.count_quantile(m, 0.005):  # contamination only adds small p-values
        warning = (
            f"the set scores lower than the reference's calibration images ({at_most:,} of "
            f"{m:,} p-values ≤ {lam}, fewer than 99.5% of clean sets give): its "
            "in-distribution images are not exchangeable with them, so the estimate is "
            "biased low; calibrate the reference on images like these"
        )
    return Estimate(fraction, low, high, suspects, warning=warning, **found)


def truncated(value: float, digits: int = 2) -> str:
    """`value` cut (not rounded) to `digits` decimals: "1.99 < 2" stays true for 1.996."""
    return f"{math.floor(value * 10**digits) / 10**digits:.{digits}f}"


def _mixture(log_scores: np.ndarray, seed: int) -> tuple[float | None, str | None]:
    """(the upper component's weight, None), or (None, why there is none): BIC does not
    clearly prefer two components to one, the two overlap (a skewed bulk, not a second
    population), or the upper one would be the majority."""
    x = log_scores.reshape(-1, 1)
    one = GaussianMixture(1, random_state=seed).fit(x)
    two = GaussianMixture(2, random_state=seed, n_init=2).fit(x)
    if two.bic(x) > one.bic(x) - BIC_MARGIN:
        return None, "the out-of-fold scores form one group (BIC finds no second component)"
    means, spreads = two.means_.ravel(), two.covariances_.ravel()
    separation = float(np.sqrt(2) * abs(means[0] - means[1]) / np.sqrt(spreads.sum()))
    if separation < SEPARATION:
        return None, (
            f"the two groups of out-of-fold scores overlap (Ashman's D = "
            f"{truncated(separation)} < "
            f"{SEPARATION:g}): a skewed bulk, no separate population of contaminants"
        )
    weight = float(two.weights_[int(np.argmax(means))])
    if weight >= 0.5:
        return None, f"the higher-scoring group would hold {weight:.0%} of the set"
    return weight, None


def _log_scores(scores: np.ndarray) -> np.ndarray:
    """Logs of scores shifted below their bulk by robust quantiles (NLL scores are
    right-skewed; logs make the bulk Gaussian), so no single score sets the transform."""
    s = np.asarray(scores, float)
    q01, q50 = np.quantile(s, [0.01, 0.5])
    spread = max(q50 - q01, 1e-12)
    return np.log(np.maximum(s - (q01 - spread), 1e-3 * spread))


def mixture_estimate(scores: np.ndarray, n_boot: int = 100, seed: int = 0) -> Estimate:
    """Upper component's weight of a two-Gaussian fit to out-of-fold (log) anomaly scores;
    undetermined where the fit, or half of its bootstrap resamples, finds no such group."""
    if len(scores) < 10:
        raise ConfigError(f"a mixture estimate needs at least 10 scored images, got {len(scores)}")
    x = _log_scores(scores)
    fraction, reason = _mixture(x, seed)
    rng = np.random.default_rng(seed)
    draws = [_mixture(x[rng.integers(0, len(x), len(x))], seed)[0] for _ in range(n_boot)]
    found = np.asarray([d for d in draws if d is not None])
    if fraction is not None and len(found) < n_boot / 2:
        fraction, reason = None, f"only {len(found)} of {n_boot} resamples find a second group"
    if fraction is None:
        return Estimate(None, None, None, np.zeros(len(x), bool), "mixture", reason=reason)
    return Estimate(fraction, *percentile_interval(found), _top(scores, fraction), "mixture")


def cross_fit_scores(
    features: np.ndarray,
    method: str,
    density: str = "auto",
    folds: int = 5,
    seed: int = 0,
    keep: float | None = None,
) -> np.ndarray:
    """Out-of-fold anomaly scores: each row is scored by a density not fitted on it.

    With `keep` (e.g. 0.8), a second pass fits each fold's density only on the rows whose
    first-pass score is below that quantile: contaminants no longer widen the density
    they are scored by, so they stand out further (trimmed cross-fitting)."""
    folds = min(folds, len(features))
    if folds < 2:
        raise ConfigError("cross-fitting needs at least 2 images")
    assignment = np.random.default_rng(seed).permutation(len(features)) % folds
    fitted = np.ones(len(features), bool)
    for _ in range(1 if keep is None else 2):
        scores = np.empty(len(features))
        for fold in range(folds):
            held = assignment == fold
            model = make_density(density, method).fit(features[~held & fitted])
            scores[held] = model.anomaly_score(features[held])
        fitted = scores <= np.quantile(scores, keep or 1.0)
    return scores


def audit_scores(
    features: np.ndarray,
    method: str,
    density: str = "auto",
    folds: int = 5,
    seed: int = 0,
    reference: Reference | None = None,
    fdr: float = FDR,
) -> tuple[np.ndarray, np.ndarray | None, Estimate]:
    """Scores of a set with unknown contamination → (anomaly scores, conformal p-values or
    None, estimate): against `reference` when given (suspects at false-discovery rate
    `fdr`), else by trimmed cross-fitting."""
    if reference is not None:
        scores, calibration = reference.anomaly_score(features), reference.calibration_scores
        groups = reference.calibration_groups
        estimate = storey_estimate(scores, calibration, seed=seed, fdr=fdr, groups=groups)
        return scores, conformal_p_values(scores, calibration), estimate
    scores = cross_fit_scores(features, method, density, folds, seed, keep=TRIM)
    return scores, None, mixture_estimate(scores, seed=seed)
