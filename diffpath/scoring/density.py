"""Density models over feature vectors, scikit-learn style.

`fit(X)` returns self; `score_samples(X)` is the log-density — higher means more
in-distribution. The anomaly score is its negative, `anomaly_score(X)`. Fitted models
save to JSON (with the feature-config hash inside) and load without unpickling.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from itertools import product
from typing import Any, ClassVar, Literal

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.covariance import LedoitWolf
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import KFold
from sklearn.neighbors import KernelDensity

from diffpath.errors import ConfigError, ConfigMismatchError, NotFittedError
from diffpath.io.storage import read_bytes, write_bytes
from diffpath.methods import get_method

__all__ = [
    "DensityModel",
    "GMMDensity",
    "GaussianDensity",
    "KDEDensity",
    "load_density",
    "make_density",
    "save_density",
]

FORMAT = "diffpath-density/1"
CovarianceType = Literal["full", "tied", "diag", "spherical"]


def _as_2d(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2 or not np.isfinite(X).all():
        raise ConfigError(f"features must be a finite (n, d) array, got shape {X.shape}")
    return X


class DensityModel(BaseEstimator, ABC):
    """Base class: standardises features (mean_, scale_) and defines the persisted state.

    scikit-learn's `BaseEstimator` gives `get_params`/`set_params`/`clone` from the
    `__init__` signature; fitted attributes (ending in `_`) exist only after `fit`."""

    kind: ClassVar[str]

    def fit(self, X: np.ndarray) -> DensityModel:
        X = _as_2d(X)
        if len(X) < 2:
            raise ConfigError(f"need at least 2 reference feature rows, got {len(X)}")
        self.mean_ = X.mean(0)
        self.scale_ = np.where(X.std(0) > 0, X.std(0), 1.0)
        self._fit(self._standardize(X))
        return self

    def score_samples(self, X: np.ndarray) -> np.ndarray:
        """Log-density of each row of X (n, d) → (n,); higher = more in-distribution."""
        if not hasattr(self, "mean_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit(X) first")
        X = _as_2d(X)
        if X.shape[1] != len(self.mean_):
            raise ConfigError(f"fitted on {len(self.mean_)} features, got {X.shape[1]}")
        # change of variables back to the unstandardised features
        return self._log_density(self._standardize(X)) - np.log(self.scale_).sum()

    def anomaly_score(self, X: np.ndarray) -> np.ndarray:
        """Negative log-density: higher = more anomalous."""
        return -self.score_samples(X)

    def _standardize(self, X: np.ndarray) -> np.ndarray:
        return (X - self.mean_) / self.scale_

    def problems(self) -> list[str]:
        """Why this fitted state cannot be a real fit (e.g. loaded from an edited file)."""
        if not (np.isfinite(self.mean_).all() and np.isfinite(self.scale_).all()):
            return ["its feature scaling is not finite"]
        if (self.scale_ <= 0).any():
            return ["its feature scales are not positive"]
        return self._problems()

    def _problems(self) -> list[str]:
        return []

    @abstractmethod
    def _fit(self, Z: np.ndarray) -> None: ...

    @abstractmethod
    def _log_density(self, Z: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def _state(self) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def _set_state(self, state: dict[str, np.ndarray]) -> None: ...


class GaussianDensity(DensityModel):
    """One Gaussian with a Ledoit–Wolf shrunk covariance: log-density = −½ Mahalanobis² + c."""

    kind = "gaussian"

    def _fit(self, Z: np.ndarray) -> None:
        estimator = LedoitWolf().fit(Z)
        self.location_, self.precision_ = estimator.location_, estimator.precision_
        self.logdet_ = np.linalg.slogdet(estimator.covariance_)[1]

    def _log_density(self, Z: np.ndarray) -> np.ndarray:
        diff = Z - self.location_
        mahalanobis = np.einsum("ni,ij,nj->n", diff, self.precision_, diff)
        return -0.5 * (mahalanobis + self.logdet_ + Z.shape[1] * np.log(2 * np.pi))

    def _problems(self) -> list[str]:
        if not _positive_definite(self.precision_) or not np.isfinite(self.logdet_):
            return ["its covariance is not positive definite"]
        return []

    def _state(self) -> dict[str, np.ndarray]:
        return {"location_": self.location_, "precision_": self.precision_, "logdet_": self.logdet_}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self.location_, self.precision_ = state["location_"], state["precision_"]
        self.logdet_ = float(state["logdet_"])


class GMMDensity(DensityModel):
    """Gaussian mixture on standardised features; components and covariance type are picked
    from the candidates by BIC (`selection="bic"`) or by k-fold held-out log-likelihood."""

    kind = "gmm"

    def __init__(
        self,
        n_components: Sequence[int] = (1, 2, 4, 8),
        covariance_types: Sequence[CovarianceType] = ("full", "diag"),
        selection: Literal["bic", "cv"] = "bic",
        cv_folds: int = 5,
        seed: int = 0,
    ) -> None:
        self.n_components = n_components
        self.covariance_types = covariance_types
        self.selection = selection
        self.cv_folds = cv_folds
        self.seed = seed

    def _mixture(self, n: int, covariance_type: str) -> GaussianMixture:
        return GaussianMixture(
            n, covariance_type=covariance_type, random_state=self.seed, reg_covar=1e-5
        )

    def _criterion(self, Z: np.ndarray, n: int, covariance_type: str) -> float:
        """Lower is better: BIC, or minus the mean held-out log-likelihood."""
        if self.selection == "bic":
            return self._mixture(n, covariance_type).fit(Z).bic(Z)
        folds = KFold(min(self.cv_folds, len(Z)), shuffle=True, random_state=self.seed)
        held_out = [
            self._mixture(n, covariance_type).fit(Z[train]).score(Z[test])
            for train, test in folds.split(Z)
        ]
        return -float(np.mean(held_out))

    def _fit(self, Z: np.ndarray) -> None:
        candidates = [
            (n, c)
            for n, c in product(self.n_components, self.covariance_types)
            if n <= len(Z) // 2 or n == 1
        ]
        scores = {cand: self._criterion(Z, *cand) for cand in candidates}
        self.n_components_, self.covariance_type_ = min(scores, key=scores.get)
        self.mixture_ = self._mixture(self.n_components_, self.covariance_type_).fit(Z)

    def _log_density(self, Z: np.ndarray) -> np.ndarray:
        return self.mixture_.score_samples(Z)

    def _problems(self) -> list[str]:
        m, problems = self.mixture_, []
        if (
            (m.weights_ < 0).any()
            or not np.isclose(m.weights_.sum(), 1.0)
            or (m.weights_ == 0).all()
        ):
            problems.append(
                f"its mixture weights {np.round(m.weights_, 4).tolist()} do not sum to 1"
            )
        covariances = np.asarray(m.covariances_)
        if self.covariance_type_ == "full":
            definite = all(_positive_definite(c) for c in covariances)
        elif self.covariance_type_ == "tied":
            definite = _positive_definite(covariances)
        else:
            definite = bool(np.isfinite(covariances).all() and (covariances > 0).all())
        if not definite or not np.isfinite(m.means_).all():
            problems.append("its mixture covariances are not positive definite")
        return problems

    def _state(self) -> dict[str, np.ndarray]:
        m = self.mixture_
        return {
            "n_components_": np.array(self.n_components_),
            "covariance_type_": np.array(self.covariance_type_),
            "weights_": m.weights_,
            "means_": m.means_,
            "covariances_": m.covariances_,
            "precisions_cholesky_": m.precisions_cholesky_,
        }

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self.n_components_ = int(state["n_components_"])
        self.covariance_type_ = str(state["covariance_type_"])
        m = self._mixture(self.n_components_, self.covariance_type_)
        m.weights_, m.means_ = state["weights_"], state["means_"]
        m.covariances_, m.precisions_cholesky_ = (
            state["covariances_"],
            state["precisions_cholesky_"],
        )
        self.mixture_ = m


class KDEDensity(DensityModel):
    """Gaussian kernel density; `bandwidth` is in units of the raw (unstandardised) features,
    as DiffPath's 1-D KDE (bandwidth 5)."""

    kind = "kde"

    def __init__(self, bandwidth: float = 5.0) -> None:
        self.bandwidth = bandwidth

    def _fit(self, Z: np.ndarray) -> None:
        self.points_ = Z
        # a bandwidth h in raw units is h / scale_ per standardised axis; scale axes to match
        self.kde_ = KernelDensity(bandwidth=1.0).fit(Z * self.scale_ / self.bandwidth)

    def _log_density(self, Z: np.ndarray) -> np.ndarray:
        log_jacobian = np.log(self.scale_ / self.bandwidth).sum()
        return self.kde_.score_samples(Z * self.scale_ / self.bandwidth) + log_jacobian

    def _state(self) -> dict[str, np.ndarray]:
        return {"points_": self.points_}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self._fit(state["points_"])


DENSITIES: dict[str, type[DensityModel]] = {
    cls.kind: cls for cls in (GaussianDensity, GMMDensity, KDEDensity)
}


def _positive_definite(matrix: np.ndarray) -> bool:
    matrix = np.asarray(matrix, float)
    if not np.isfinite(matrix).all() or not np.allclose(matrix, matrix.T):
        return False
    try:
        np.linalg.cholesky(matrix)
    except np.linalg.LinAlgError:
        return False
    return True


def make_density(kind: str, method: str = "diffpathv2", **params: Any) -> DensityModel:
    """A density model by name: 'gaussian', 'gmm', 'kde', or 'auto' — the method's own
    (`diffpath.methods`: a GMM chosen by BIC for DiffPathV2, DiffPath's as in its code)."""
    if kind == "auto":
        kind, params = get_method(method).density[0], dict(get_method(method).density[1])
    if kind not in DENSITIES:
        raise ConfigError(
            f"unknown density {kind!r}; choose from auto, {', '.join(sorted(DENSITIES))}"
        )
    return DENSITIES[kind](**params)


def _to_json(value: np.ndarray) -> dict[str, Any]:
    array = np.asarray(value)
    return {"dtype": array.dtype.str, "shape": list(array.shape), "data": array.ravel().tolist()}


def _from_json(value: dict[str, Any]) -> np.ndarray:
    return np.asarray(value["data"], dtype=np.dtype(value["dtype"])).reshape(value["shape"])


def density_to_dict(density: DensityModel, config_hash: str) -> dict[str, Any]:
    """The JSON-able form of a fitted density (see `save_density`)."""
    state = {"mean_": density.mean_, "scale_": density.scale_, **density._state()}
    return {
        "format": FORMAT,
        "kind": density.kind,
        "config_hash": config_hash,
        "params": {
            k: list(v) if isinstance(v, tuple) else v for k, v in density.get_params().items()
        },
        "state": {name: _to_json(value) for name, value in state.items()},
    }


def density_from_dict(data: dict[str, Any], config_hash: str | None = None) -> DensityModel:
    """Rebuild a fitted density; with `config_hash`, refuse one fitted under another config."""
    if data.get("format") != FORMAT:
        raise ConfigError(f"not a diffpath density file (format {data.get('format')!r})")
    if config_hash is not None and data["config_hash"] != config_hash:
        raise ConfigMismatchError(
            f"density was fitted on features of config {data['config_hash']}, but these "
            f"features come from config {config_hash}; refit the reference with this config"
        )
    density = make_density(data["kind"], **data["params"])
    state = {name: _from_json(value) for name, value in data["state"].items()}
    density.mean_, density.scale_ = state.pop("mean_"), state.pop("scale_")
    density._set_state(state)
    density.config_hash_ = data["config_hash"]
    return density


def save_density(density: DensityModel, uri: str, config_hash: str) -> str:
    """Write a fitted density as JSON to `uri` (any fsspec URI); returns the URI."""
    density.config_hash_ = config_hash
    return write_bytes(uri, json.dumps(density_to_dict(density, config_hash)).encode())


def load_density(uri: str, config_hash: str | None = None) -> DensityModel:
    """Load a density saved by `save_density`; JSON only, nothing is unpickled."""
    return density_from_dict(json.loads(read_bytes(uri)), config_hash)
