"""How much of a set does not belong: contamination estimates with intervals, and suspects.

With a trusted reference, each image has a conformal p-value; Storey's estimator reads the
in-distribution share π0 off the flat part of their histogram (#{p > λ} / n(1 − λ)).
Without one, images are scored by trimmed cross-fitting and the scores are fitted with one
and with two Gaussian components (on log scores); where BIC clearly prefers two, the upper
component's weight is the estimate. Either way the suspects are the estimated number of
highest-scoring images. Measured on the shared data (docs/benchmarks.md), the reference
estimate tracks the truth; the estimate without one over-counts: give `audit --reference`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.mixture import GaussianMixture

from diffpath.errors import ConfigError
from diffpath.metrics import conformal_p_values, percentile_interval
from diffpath.reference import Reference, cross_fit_scores

__all__ = ["Estimate", "audit_scores", "mixture_estimate", "storey_estimate"]

BIC_MARGIN = 10.0  # "very strong" evidence (Kass & Raftery) before calling a second component
TRIM = 0.8  # trimmed cross-fitting: the second pass fits on the lowest-scoring 80%


@dataclass(frozen=True)
class Estimate:
    """An estimated contaminated fraction with a bootstrap 95% interval, and the suspects."""

    fraction: float
    low: float
    high: float
    suspects: np.ndarray  # bool per image: the round(fraction · n) highest scores
    method: str

    def as_dict(self) -> dict[str, float | int | str]:
        return {
            "estimated_contamination": self.fraction,
            "contamination_low": self.low,
            "contamination_high": self.high,
            "n_suspects": int(self.suspects.sum()),
            "estimator": self.method,
        }


def _top(scores: np.ndarray, fraction: float) -> np.ndarray:
    """The round(fraction · n) highest scores (bool per score)."""
    flagged = np.zeros(len(scores), bool)
    flagged[
        np.argsort(-np.asarray(scores, float), kind="stable")[: round(fraction * len(scores))]
    ] = True
    return flagged


def _storey(p: np.ndarray, lam: float) -> float:
    return float(1 - min(1.0, np.mean(p > lam) / (1 - lam)))


def storey_estimate(
    scores: np.ndarray,
    calibration: np.ndarray,
    lam: float = 0.5,
    n_boot: int = 500,
    seed: int = 0,
) -> Estimate:
    """1 − π0 from the conformal p-values of anomaly `scores` against a trusted reference's
    `calibration` scores; the interval resamples both (few calibration images: wide)."""
    scores, calibration = np.asarray(scores, float), np.asarray(calibration, float)
    if not len(scores):
        raise ConfigError("a contamination estimate needs at least one scored image")
    fraction = _storey(conformal_p_values(scores, calibration), lam)
    rng = np.random.default_rng(seed)
    draws = [
        _storey(
            conformal_p_values(
                scores[rng.integers(0, len(scores), len(scores))],
                calibration[rng.integers(0, len(calibration), len(calibration))],
            ),
            lam,
        )
        for _ in range(n_boot)
    ]
    return Estimate(
        fraction, *percentile_interval(np.asarray(draws)), _top(scores, fraction), "storey"
    )


def _mixture(log_scores: np.ndarray, seed: int) -> float:
    """The upper component's weight, or 0 where BIC does not clearly prefer two components
    to one (or the upper one would be the majority)."""
    x = log_scores.reshape(-1, 1)
    one = GaussianMixture(1, random_state=seed).fit(x)
    two = GaussianMixture(2, random_state=seed, n_init=2).fit(x)
    if two.bic(x) > one.bic(x) - BIC_MARGIN:
        return 0.0
    weight = float(two.weights_[int(np.argmax(two.means_.ravel()))])
    return weight if weight < 0.5 else 0.0


def _log_scores(scores: np.ndarray) -> np.ndarray:
    s = np.asarray(scores, float)
    return np.log1p(s - s.min())  # NLL scores are right-skewed; logs make the bulk Gaussian


def mixture_estimate(scores: np.ndarray, n_boot: int = 100, seed: int = 0) -> Estimate:
    """Upper component's weight of a two-Gaussian fit to out-of-fold (log) anomaly scores."""
    if len(scores) < 10:
        raise ConfigError(f"a mixture estimate needs at least 10 scored images, got {len(scores)}")
    x = _log_scores(scores)
    rng = np.random.default_rng(seed)
    draws = [_mixture(x[rng.integers(0, len(x), len(x))], seed) for _ in range(n_boot)]
    fraction = _mixture(x, seed)
    return Estimate(
        fraction, *percentile_interval(np.asarray(draws)), _top(scores, fraction), "mixture"
    )


def audit_scores(
    features: np.ndarray,
    method: str,
    density: str = "auto",
    folds: int = 5,
    seed: int = 0,
    reference: Reference | None = None,
) -> tuple[np.ndarray, np.ndarray | None, Estimate]:
    """Scores of a set with unknown contamination → (anomaly scores, conformal p-values or
    None, estimate): against `reference` when given, else by trimmed cross-fitting."""
    if reference is not None:
        scores = reference.anomaly_score(features)
        p_values = conformal_p_values(scores, reference.calibration_scores)
        return scores, p_values, storey_estimate(scores, reference.calibration_scores, seed=seed)
    scores = cross_fit_scores(features, method, density, folds, seed, keep=TRIM)
    return scores, None, mixture_estimate(scores, seed=seed)
