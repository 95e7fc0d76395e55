"""How much of a set does not belong: contamination estimates with intervals, and suspects.

With a trusted reference, each image has a conformal p-value; Storey's estimator reads the
in-distribution share π0 off the flat part of their histogram (#{p > λ} / n(1 − λ)) and
Benjamini–Hochberg names the suspects at a false-discovery rate. Without one, the
out-of-fold scores are fitted with one and with two Gaussian components (on log scores);
where BIC prefers two, the upper component's weight is the estimate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.mixture import GaussianMixture

from diffpath.errors import ConfigError

__all__ = ["Estimate", "benjamini_hochberg", "mixture_estimate", "storey_estimate"]

BIC_MARGIN = 10.0  # "very strong" evidence (Kass & Raftery) before calling a second component


@dataclass(frozen=True)
class Estimate:
    """An estimated contaminated fraction with a bootstrap 95% interval, and the suspects."""

    fraction: float
    low: float
    high: float
    suspects: np.ndarray  # bool per image
    method: str

    def as_dict(self) -> dict[str, float | int | str]:
        return {
            "estimated_contamination": self.fraction,
            "contamination_low": self.low,
            "contamination_high": self.high,
            "n_suspects": int(self.suspects.sum()),
            "estimator": self.method,
        }


def _interval(statistic, values: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    draws = [statistic(values[rng.integers(0, len(values), len(values))]) for _ in range(n_boot)]
    low, high = np.quantile(draws, [0.025, 0.975])
    return float(low), float(high)


def benjamini_hochberg(p_values: np.ndarray, q: float = 0.1) -> np.ndarray:
    """Which p-values BH rejects at false-discovery rate `q` (bool per value)."""
    p = np.asarray(p_values, float)
    order = np.argsort(p)
    below = p[order] <= q * np.arange(1, len(p) + 1) / len(p)
    rejected = np.zeros(len(p), bool)
    if below.any():
        rejected[order[: np.flatnonzero(below).max() + 1]] = True
    return rejected


def _storey(p: np.ndarray, lam: float) -> float:
    return float(1 - min(1.0, np.mean(p > lam) / (1 - lam)))


def storey_estimate(
    p_values: np.ndarray, q: float = 0.1, lam: float = 0.5, n_boot: int = 500, seed: int = 0
) -> Estimate:
    """1 − π0 from conformal p-values against a trusted reference; suspects by BH at `q`."""
    p = np.asarray(p_values, float)
    if not len(p):
        raise ConfigError("a contamination estimate needs at least one scored image")
    low, high = _interval(lambda v: _storey(v, lam), p, n_boot, seed)
    return Estimate(_storey(p, lam), low, high, benjamini_hochberg(p, q), "storey")


def _mixture(log_scores: np.ndarray, seed: int) -> tuple[float, np.ndarray]:
    """(upper component's weight, its posterior per score), or (0, zeros) where BIC does not
    clearly prefer two components to one."""
    x = log_scores.reshape(-1, 1)
    one = GaussianMixture(1, random_state=seed).fit(x)
    two = GaussianMixture(2, random_state=seed, n_init=2).fit(x)
    if two.bic(x) > one.bic(x) - BIC_MARGIN:
        return 0.0, np.zeros(len(x))
    upper = int(np.argmax(two.means_.ravel()))
    weight = float(two.weights_[upper])
    if weight >= 0.5:  # the "anomalous" component cannot be the majority
        return 0.0, np.zeros(len(x))
    return weight, two.predict_proba(x)[:, upper]


def _log_scores(scores: np.ndarray) -> np.ndarray:
    s = np.asarray(scores, float)
    return np.log1p(s - s.min())  # NLL scores are right-skewed; logs make the bulk Gaussian


def mixture_estimate(scores: np.ndarray, n_boot: int = 100, seed: int = 0) -> Estimate:
    """Upper component's weight of a two-Gaussian fit to out-of-fold (log) anomaly scores."""
    if len(scores) < 10:
        raise ConfigError(f"a mixture estimate needs at least 10 scored images, got {len(scores)}")
    x = _log_scores(scores)
    fraction, posterior = _mixture(x, seed)
    low, high = _interval(lambda v: _mixture(v, seed)[0], x, n_boot, seed)
    return Estimate(fraction, low, high, posterior > 0.5, "mixture")
