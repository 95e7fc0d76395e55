"""A fitted in-distribution reference: density model + calibrated flagging threshold.

`fit_reference` holds back part of the trusted features, fits the density on the rest,
and sets the threshold so that `target_fpr` of held-back in-distribution images would be
flagged. Saved as JSON (density, threshold, config, model id, calibration scores).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from diffpath.config import FeatureConfig
from diffpath.density import DensityModel, density_from_dict, density_to_dict, make_density
from diffpath.errors import ConfigError, ConfigMismatchError
from diffpath.metrics import calibrate_threshold
from diffpath.storage import read_bytes, write_bytes

__all__ = ["Reference", "cross_fit_scores", "fit_reference", "load_reference", "save_reference"]

FORMAT = "diffpath-reference/1"


@dataclass
class Reference:
    """What `screen` needs: the density, its threshold and the config the features used."""

    density: DensityModel
    threshold: float
    target_fpr: float
    config: FeatureConfig
    model_id: str
    n_fit: int
    calibration_scores: np.ndarray  # anomaly scores of held-back reference images

    def anomaly_score(self, features: np.ndarray) -> np.ndarray:
        return self.density.anomaly_score(features)

    def flag(self, scores: np.ndarray) -> np.ndarray:
        return scores > self.threshold


def fit_reference(
    features: np.ndarray,
    config: FeatureConfig,
    model_id: str,
    density: str = "auto",
    target_fpr: float = 0.05,
    holdout: float = 0.2,
    seed: int = 0,
) -> Reference:
    """Fit the density on (1 − holdout) of `features`, calibrate the threshold on the rest."""
    if not 0 < holdout < 1:
        raise ConfigError(f"holdout must be in (0, 1), got {holdout}")
    order = np.random.default_rng(seed).permutation(len(features))
    n_cal = max(1, round(holdout * len(features)))
    if len(features) - n_cal < 2:
        raise ConfigError(f"need more reference images than {len(features)} to fit and calibrate")
    fit_rows, cal_rows = order[n_cal:], order[:n_cal]
    model = make_density(density, config.method).fit(features[fit_rows])
    calibration = model.anomaly_score(features[cal_rows])
    return Reference(
        density=model,
        threshold=calibrate_threshold(calibration, target_fpr),
        target_fpr=target_fpr,
        config=config,
        model_id=model_id,
        n_fit=len(fit_rows),
        calibration_scores=np.sort(calibration),
    )


def cross_fit_scores(
    features: np.ndarray, method: str, density: str = "auto", folds: int = 5, seed: int = 0
) -> np.ndarray:
    """Out-of-fold anomaly scores: each row is scored by a density not fitted on it."""
    folds = min(folds, len(features))
    if folds < 2:
        raise ConfigError("cross-fitting needs at least 2 images")
    assignment = np.random.default_rng(seed).permutation(len(features)) % folds
    scores = np.empty(len(features))
    for fold in range(folds):
        held = assignment == fold
        model = make_density(density, method).fit(features[~held])
        scores[held] = model.anomaly_score(features[held])
    return scores


def reference_to_dict(reference: Reference) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "config": reference.config.model_dump(mode="json"),
        "config_hash": reference.config.config_hash(),
        "model_id": reference.model_id,
        "threshold": reference.threshold,
        "target_fpr": reference.target_fpr,
        "n_fit": reference.n_fit,
        "calibration_scores": reference.calibration_scores.tolist(),
        "density": density_to_dict(reference.density, reference.config.config_hash()),
    }


def save_reference(reference: Reference, uri: str) -> str:
    return write_bytes(uri, json.dumps(reference_to_dict(reference)).encode())


def load_reference(uri: str, config_hash: str | None = None) -> Reference:
    """Load a reference; with `config_hash`, refuse one fitted under another config."""
    data = json.loads(read_bytes(uri))
    if data.get("format") != FORMAT:
        raise ConfigError(f"{uri} is not a diffpath reference (format {data.get('format')!r})")
    if config_hash is not None and data["config_hash"] != config_hash:
        raise ConfigMismatchError(
            f"reference {uri} was fitted with config {data['config_hash']}, but this run "
            f"uses config {config_hash}; pass the same feature options or refit"
        )
    return Reference(
        density=density_from_dict(data["density"]),
        threshold=data["threshold"],
        target_fpr=data["target_fpr"],
        config=FeatureConfig(**data["config"]),
        model_id=data["model_id"],
        n_fit=data["n_fit"],
        calibration_scores=np.asarray(data["calibration_scores"]),
    )
