"""Turn feature tables into per-image scores, flags, ranks and summaries (pure, no I/O)."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from diffpath.config import FeatureConfig
from diffpath.errors import ConfigMismatchError
from diffpath.featurestore import feature_matrix
from diffpath.reference import Reference, cross_fit_scores

__all__ = ["audit_table", "errors_table", "score_table", "screen_table", "summarize"]

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


def score_table(keys: list[str], scores: np.ndarray, flagged: np.ndarray) -> pl.DataFrame:
    """(path, score, flagged, rank) sorted by rank; rank 1 is the most anomalous."""
    order = np.argsort(-scores, kind="stable")
    rank = np.empty(len(scores), dtype=np.int64)
    rank[order] = np.arange(1, len(scores) + 1)
    frame = pl.DataFrame(
        {"path": keys, "score": scores, "flagged": flagged, "rank": rank},
        schema={"path": pl.String, "score": pl.Float64, "flagged": pl.Boolean, "rank": pl.Int64},
    )
    return frame.sort("rank")


def errors_table(features: pl.DataFrame) -> pl.DataFrame:
    """(path, error) of the images that could not be read or decoded."""
    return features.filter(pl.col("error").is_not_null()).select("path", "error")


def summarize(scores: pl.DataFrame, n_errors: int, **extra: Any) -> dict[str, Any]:
    """Counts, flagged fraction and score quantiles, plus `extra` fields."""
    values = scores["score"].to_numpy()
    quantiles = np.quantile(values, QUANTILES) if len(values) else [None] * len(QUANTILES)
    n_flagged = int(scores["flagged"].sum())
    return {
        "n_images": len(scores) + n_errors,
        "n_scored": len(scores),
        "n_errors": n_errors,
        "n_flagged": n_flagged,
        "flagged_fraction": n_flagged / max(1, len(scores)),
        "score_quantiles": {
            str(q): None if v is None else float(v)
            for q, v in zip(QUANTILES, quantiles, strict=True)
        },
        **extra,
    }


def screen_table(
    reference: Reference, features: pl.DataFrame, model_id: str
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Score features against a reference → (scores, errors); refuses another model's features."""
    if model_id != reference.model_id:
        raise ConfigMismatchError(
            f"features come from model {model_id}, the reference from {reference.model_id}"
        )
    keys, matrix = feature_matrix(features, reference.config)
    scores = reference.anomaly_score(matrix) if len(keys) else np.empty(0)
    return score_table(keys, scores, reference.flag(scores)), errors_table(features)


def audit_table(
    features: pl.DataFrame, config: FeatureConfig, density: str, folds: int, seed: int
) -> tuple[pl.DataFrame, float]:
    """Out-of-fold scores of a set with unknown contamination → (scores, estimated fraction).

    Suspects are robust outliers of the out-of-fold scores: modified z-score
    0.6745·(s − median)/MAD above 3.5 (Iglewicz & Hoaglin); the estimated contamination
    is the fraction of suspects.
    """
    keys, matrix = feature_matrix(features, config)
    scores = cross_fit_scores(matrix, config.method, density, folds, seed)
    median = np.median(scores)
    mad = np.median(np.abs(scores - median)) or 1e-12
    flagged = 0.6745 * (scores - median) / mad > 3.5
    return score_table(keys, scores, flagged), float(flagged.mean())
