"""A fitted in-distribution reference: density model + calibrated flagging threshold.

`fit_reference` holds back part of the trusted features, fits the density on the rest,
and sets the threshold so that `target_fpr` of held-back in-distribution images would be
flagged. Saved as JSON (density, threshold, config, model id, calibration scores).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from diffpath.config import FeatureConfig
from diffpath.errors import ConfigError, ConfigMismatchError
from diffpath.features.shards import feature_matrix, read_shards
from diffpath.io.identity import feature_key
from diffpath.io.storage import join, read_bytes, read_parquet, write_bytes
from diffpath.model.diffusion import PREVIOUS_DEFAULTS, model_fingerprint
from diffpath.model.location import model_location
from diffpath.scoring.conformal import calibrate_threshold, conformal_rank
from diffpath.scoring.density import DensityModel, density_from_dict, density_to_dict, make_density
from diffpath.scoring.grouping import Grouping

__all__ = [
    "Reference",
    "check_fit_options",
    "check_split",
    "fit_reference",
    "fit_reference_shards",
    "load_reference",
    "pin_reference",
    "reference_setup",
    "save_reference",
    "split_holdout",
]

FORMAT = "diffpath-reference/2"  # 2: content checksum


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
    split: str = "random"  # how they were held back: "random" or "group:<column or by>"
    checksum: str | None = None  # of the saved JSON, once saved
    calibration_groups: np.ndarray | None = None  # group code of each calibration score
    model: str = "default"  # where the weights were at the fit: a folder, a hub id, 'default'

    @property
    def feature_key(self) -> str:
        """The key of the features this reference scores (config hash + model fingerprint)."""
        return feature_key(self.config, self.model_id)

    def anomaly_score(self, features: np.ndarray) -> np.ndarray:
        return self.density.anomaly_score(features)

    @property
    def warnings(self) -> list[str]:
        """What this reference's fit does to the numbers it gives: a random calibration
        split, a crop in pixels (another region of each image at each resolution)."""
        warnings = []
        if self.split == "random":
            warnings.append(
                "the reference was calibrated on a random split: where images share an "
                "identity or source across it, new in-distribution images look more unusual "
                "than the calibration images, so more are flagged than expected and "
                "contamination is over-estimated; refit with --group-column (Parquet) or "
                "--group-by (files)"
            )
        if self.config.center_crop is not None:
            warnings.append(
                f"the reference crops {self.config.center_crop} px of every image whatever "
                "its size, so images of other resolutions are screened on another region; "
                "refit with --crop (celeba-face, or a fraction of the short side)"
            )
        return warnings

    def check_model(self, model_id: str) -> None:
        """Refuse features of other weights than the reference was fitted with."""
        if model_id != self.model_id:
            raise ConfigMismatchError(
                f"features come from model {model_id}, the reference from {self.model_id}"
            )


def split_holdout(
    n: int, holdout: float, seed: int, groups: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(rows to fit, rows to calibrate on): a seeded random `holdout` fraction, or whole
    groups drawn at random until they make up that fraction."""
    if not 0 < holdout < 1:
        raise ConfigError(f"holdout must be in (0, 1), got {holdout}")
    rng = np.random.default_rng(seed)
    if groups is None:
        order = rng.permutation(n)
        n_cal = max(1, round(holdout * n))
        fit_rows, cal_rows = order[n_cal:], order[:n_cal]
    else:
        labels, index = np.unique(np.asarray(groups, str), return_inverse=True)
        held = rng.permutation(len(labels))
        n_held = int(np.searchsorted(np.cumsum(np.bincount(index)[held]), holdout * n)) + 1
        is_cal = np.isin(index, held[:n_held])
        fit_rows, cal_rows = np.flatnonzero(~is_cal), np.flatnonzero(is_cal)
    if len(fit_rows) < 2 or len(cal_rows) < 1:
        raise ConfigError(f"need more reference images (or groups) than {n} to fit and calibrate")
    return np.sort(fit_rows), np.sort(cal_rows)


def fit_reference(
    features: np.ndarray,
    config: FeatureConfig,
    model_id: str,
    density: str = "auto",
    target_fpr: float = 0.05,
    holdout: float = 0.2,
    seed: int = 0,
    groups: np.ndarray | None = None,
    split: str | None = None,
    model: str = "default",
) -> Reference:
    """Fit the density on (1 − holdout) of `features`, calibrate the threshold on the rest.

    With `groups` (one label per row: an identity, a source), whole groups are held back,
    so calibration images share no group with the fitted ones — as new images will not —
    and the reference keeps which group each calibration score came from. `split` names
    how (default "group" with groups, else "random"; "random" for groups that are only
    copies of one image). `model` is where the weights are, for the runs that screen with it."""
    split = split or ("random" if groups is None else "group")
    fit_rows, cal_rows = split_holdout(len(features), holdout, seed, groups)
    fitted = make_density(density, config.method).fit(features[fit_rows])
    calibration = fitted.anomaly_score(features[cal_rows])
    order = np.argsort(calibration, kind="stable")
    codes = None
    if groups is not None and split != "random":  # whole groups held back: keep which
        codes = np.unique(np.asarray(groups, str)[cal_rows], return_inverse=True)[1][order]
    return Reference(
        density=fitted,
        threshold=calibrate_threshold(calibration, target_fpr),
        target_fpr=target_fpr,
        config=config,
        model_id=model_id,
        n_fit=len(fit_rows),
        calibration_scores=calibration[order],
        split=split,
        calibration_groups=codes,
        model=model,
    )


def check_fit_options(density: str, method: str, target_fpr: float, holdout: float) -> None:
    """Refuse options that would fail a fit, or give a reference `screen` refuses, before
    any feature is computed."""
    make_density(density, method)
    for name, value in (("target_fpr", target_fpr), ("holdout", holdout)):
        if not 0 < value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be in (0, 1), got {value}")


def check_split(
    listing_uri: str, grouping: Grouping | None, holdout: float, seed: int, target_fpr: float
) -> tuple[int, int | None]:
    """(calibration images, groups or None for a random split) of a stored listing, checked
    before any feature is computed: every image has a group, and enough are held back to
    flag at `target_fpr`."""
    rows = read_parquet(listing_uri)  # the listing's columns, no ref per image
    labels = None if grouping is None else grouping.labels(rows)
    _, cal_rows = split_holdout(len(rows), holdout, seed, labels)
    conformal_rank(len(cal_rows), target_fpr)
    return len(cal_rows), None if labels is None else len(set(labels))


def fit_reference_shards(
    shard_uris: list[str],
    config: FeatureConfig,
    out: str,
    density: str = "auto",
    target_fpr: float = 0.05,
    holdout: float = 0.2,
    grouping: Grouping | None = None,
    model: str = "default",
) -> str:
    """Fit a reference on a run's feature shards (of the weights at `model`) and save it as
    `out/reference.json`;
    with a `grouping` whole groups are held back, else images are split by content, so
    copies of one image never land on both sides (and calibrate too low)."""
    frame, model_id = read_shards(shard_uris, config)
    rows, features = feature_matrix(frame, config)
    groups = rows.column("sha256").to_numpy() if grouping is None else grouping.labels(rows)
    split = "random" if grouping is None else f"group:{grouping}"
    reference = fit_reference(
        features,
        config,
        model_id,
        density,
        target_fpr,
        holdout,
        config.seed,
        groups,
        split,
        model=model,
    )
    return save_reference(reference, join(out, "reference.json"))


def reference_to_dict(reference: Reference) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "config": reference.config.model_dump(mode="json"),
        "config_hash": reference.config.config_hash(),
        "model": reference.model,
        "model_id": reference.model_id,
        "feature_key": reference.feature_key,
        "threshold": reference.threshold,
        "target_fpr": reference.target_fpr,
        "n_fit": reference.n_fit,
        "split": reference.split,
        "calibration_scores": reference.calibration_scores.tolist(),
        "density": density_to_dict(reference.density, reference.config.config_hash()),
    } | (
        {}  # references without groups keep the JSON (and checksum) they always had
        if reference.calibration_groups is None
        else {"calibration_groups": reference.calibration_groups.tolist()}
    )


def _checksum(data: dict[str, Any]) -> str:
    """sha256 of the reference's canonical JSON without its checksum field."""
    content = {k: v for k, v in data.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def save_reference(reference: Reference, uri: str) -> str:
    """Write a reference as JSON with a checksum of its content (edits are detected)."""
    data = reference_to_dict(reference)
    data["checksum"] = _checksum(data)
    return write_bytes(uri, json.dumps(data, allow_nan=False).encode())


def pin_reference(uri: str, out: str) -> str:
    """Read a reference once and keep that copy as `out`/reference.json, which every later
    step of a run reads: a reference replaced at `uri` mid-run cannot mix into the run.
    Refuses an invalid one; returns the copy's URI."""
    data = read_bytes(uri)
    _parse_reference(data, uri)
    return write_bytes(join(out, "reference.json"), data)


def load_reference(uri: str) -> Reference:
    """Load and validate a reference saved by `save_reference` (JSON; nothing is unpickled):
    its checksum, hashes, numbers and density must all hold, or `ConfigError` says which."""
    return _parse_reference(read_bytes(uri), uri)


def _parse_reference(raw: bytes, uri: str) -> Reference:
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{uri} is not valid JSON ({err}); refit the reference") from err
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else None
        raise ConfigError(
            f"{uri} is not a diffpath reference of format {FORMAT} (found {found!r}); "
            "refit it with `diffpath fit-reference`"
        )
    if data.get("checksum") != _checksum(data):
        raise ConfigError(f"{uri} was changed after it was fitted (checksum mismatch); refit it")
    try:
        config, model = FeatureConfig.stored(data["config"])  # before 0.4: model in config
        reference = Reference(
            density=density_from_dict(data["density"], data["config_hash"]),
            threshold=float(data["threshold"]),
            target_fpr=float(data["target_fpr"]),
            config=config,
            model_id=str(data["model_id"]),
            n_fit=int(data["n_fit"]),
            split=str(data["split"]),
            calibration_scores=np.asarray(data["calibration_scores"], dtype=float),
            checksum=str(data["checksum"]),
            calibration_groups=(
                None
                if data.get("calibration_groups") is None
                else np.asarray(data["calibration_groups"], dtype=int)
            ),
            model=str(data.get("model", model or "default")),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"{uri} is not a valid reference: {err!r}; refit it") from err
    _validate(reference, data, uri)
    return reference


def _validate(reference: Reference, data: dict[str, Any], uri: str) -> None:
    """Refuse references whose numbers or hashes cannot be right."""
    problems = []
    if data["config_hash"] != reference.config.config_hash():
        problems.append("its config does not match its config hash")
    if data["feature_key"] != reference.feature_key:
        problems.append("its feature key does not match its config and model")
    if not np.isfinite(reference.threshold):
        problems.append(f"threshold {reference.threshold} is not finite")
    if not 0 < reference.target_fpr < 1:
        problems.append(f"target FPR {reference.target_fpr} is not in (0, 1)")
    calibration = reference.calibration_scores
    if calibration.ndim != 1 or not len(calibration) or not np.isfinite(calibration).all():
        problems.append("its calibration scores are missing or not finite")
    problems += reference.density.problems()
    if problems:
        raise ConfigError(f"{uri} is not a valid reference: {'; '.join(problems)}; refit it")


def reference_setup(uri: str, model: str | None = None) -> tuple[FeatureConfig, str]:
    """(the feature config a reference was fitted with, where its weights are): where the
    fit found them, or `model` (a folder or hub id) when they moved. Fails before any
    feature work if the weights found there are not the ones the reference was fitted with."""
    reference = load_reference(uri)
    weights = model_location(model) if model is not None else reference.model
    found = model_fingerprint(weights)
    if found != reference.model_id:
        known = PREVIOUS_DEFAULTS.get(reference.model_id)
        raise ConfigMismatchError(
            f"reference {uri} was fitted with model {reference.model_id}"
            + (f" ({known})" if known else "")
            + f", but the weights at {weights!r} are model {found}; refit the reference, "
            "or pass --model with the weights it was fitted with"
        )
    return reference.config, weights
