"""OOD detection metrics on anomaly scores (higher = more anomalous).

Conventions: in-distribution (ID) samples are the negatives of an anomaly detector.
FPR@95 follows Hendrycks & Gimpel / OpenOOD: the fraction of OOD samples accepted as ID
at the threshold that keeps 95% of ID samples.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from diffpath.errors import ConfigError

__all__ = [
    "aupr_in",
    "aupr_out",
    "auroc",
    "auroc_interval",
    "bootstrap_aurocs",
    "fpr_at_tpr",
    "ood_metrics",
    "percentile_interval",
    "roc",
]


def _labelled(id_scores: np.ndarray, ood_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    id_scores, ood_scores = np.asarray(id_scores, float), np.asarray(ood_scores, float)
    if len(id_scores) == 0 or len(ood_scores) == 0:
        raise ConfigError("metrics need at least one in-distribution and one OOD score")
    labels = np.r_[np.zeros(len(id_scores)), np.ones(len(ood_scores))]
    return labels, np.r_[id_scores, ood_scores]


def auroc(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    """Area under the ROC curve for telling OOD (positive) from ID by anomaly score."""
    return float(roc_auc_score(*_labelled(id_scores, ood_scores)))


def roc(id_scores: np.ndarray, ood_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) of the ROC curve, OOD positive."""
    fpr, tpr, _ = roc_curve(*_labelled(id_scores, ood_scores))
    return fpr, tpr


def aupr_out(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    """Average precision with OOD as the positive class."""
    return float(average_precision_score(*_labelled(id_scores, ood_scores)))


def aupr_in(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    """Average precision with ID as the positive class (scores negated)."""
    labels, scores = _labelled(id_scores, ood_scores)
    return float(average_precision_score(1 - labels, -scores))


def fpr_at_tpr(id_scores: np.ndarray, ood_scores: np.ndarray, tpr: float = 0.95) -> float:
    """Fraction of OOD scores at or below the threshold that accepts `tpr` of ID scores."""
    id_scores, ood_scores = np.asarray(id_scores, float), np.asarray(ood_scores, float)
    _labelled(id_scores, ood_scores)
    threshold = np.sort(id_scores)[int(np.ceil(tpr * len(id_scores))) - 1]
    return float(np.mean(ood_scores <= threshold))


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central `level` interval of bootstrap samples; (nan, nan) when there are none."""
    if not len(samples):
        return float("nan"), float("nan")
    tail = (1 - level) / 2
    low, high = np.quantile(samples, [tail, 1 - tail])
    return float(low), float(high)


def bootstrap_aurocs(
    id_scores: np.ndarray, ood_scores: np.ndarray, id_index: np.ndarray, ood_index: np.ndarray
) -> np.ndarray:
    """AUROC of each bootstrap resample (a row of each index array; Mann–Whitney on ranks)."""
    n0, n1 = id_index.shape[1], ood_index.shape[1]
    ranks = rankdata(np.hstack([id_scores[id_index], ood_scores[ood_index]]), axis=1)
    return (ranks[:, n0:].sum(1) - n1 * (n1 + 1) / 2) / (n0 * n1)


def auroc_interval(
    id_scores: np.ndarray, ood_scores: np.ndarray, n_boot: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """A bootstrap 95% interval of the AUROC, both sets resampled (in chunks: bounded memory)."""
    rng = np.random.default_rng(seed)
    draws = [
        bootstrap_aurocs(
            id_scores,
            ood_scores,
            rng.integers(0, len(id_scores), (chunk, len(id_scores))),
            rng.integers(0, len(ood_scores), (chunk, len(ood_scores))),
        )
        for chunk in np.diff(np.r_[0:n_boot:100, n_boot])
    ]
    return percentile_interval(np.concatenate(draws))


def ood_metrics(id_scores: np.ndarray, ood_scores: np.ndarray) -> dict[str, float]:
    """AUROC, FPR@95, AUPR-in and AUPR-out in one dict."""
    return {
        "auroc": auroc(id_scores, ood_scores),
        "fpr95": fpr_at_tpr(id_scores, ood_scores),
        "aupr_in": aupr_in(id_scores, ood_scores),
        "aupr_out": aupr_out(id_scores, ood_scores),
    }
