"""The feature methods, one entry each: every place that depends on a method asks here.

A method is a `FeatureMethod`: its feature names, the function in `diffpath/features/`
that computes them (``module:function``, imported on first use, so this table sits below
the code it names), the settings it gets unless given, what ``--density auto`` fits on
it, the config fields only it reads, and its UNet evaluations per image. A combination is
built from parts and concatenates their features. Adding a method is one module in
`diffpath/features/` and one entry in `METHODS`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from diffpath.errors import ConfigError

__all__ = ["METHODS", "FeatureMethod", "combine", "get_method"]


@dataclass(frozen=True, kw_only=True)
class FeatureMethod:
    """One way of turning an image and the model into a feature vector."""

    name: str
    feature_names: tuple[str, ...]
    defaults: Mapping[str, int]
    """`FeatureConfig` values this method gets unless given (timesteps, draws)."""
    density: tuple[str, Mapping[str, Any]]
    """The density ``--density auto`` fits, and its parameters."""
    compute: str | None = None
    """``module:function`` under `diffpath.features`: ``(model, x, ids, config) → (B, D)``."""
    evals: Callable[[Any], int] | None = None
    """UNet evaluations per image under its config: the cost, whatever the hardware."""
    reads: tuple[str, ...] = ()
    """Config fields only this method reads: a combination's other parts keep their
    defaults, so each part shares its features (and cache) with a run of it alone."""
    parts: tuple[str, ...] = field(default=())
    """A combination's methods, in column order; empty for a method of its own."""

    def function(self) -> Callable[..., Any]:
        """The function that computes this method's features (not for combinations)."""
        if self.compute is None:
            raise ConfigError(f"{self.name} combines {', '.join(self.parts)}: compute its parts")
        module, name = self.compute.split(":")
        return getattr(importlib.import_module(f"diffpath.features.{module}"), name)


def combine(name: str, parts: tuple[str, ...], defaults: Mapping[str, int]) -> FeatureMethod:
    """A method whose features are its parts' side by side, fitted with a GMM."""
    members = [METHODS[part] for part in parts]
    return FeatureMethod(
        name=name,
        feature_names=tuple(n for m in members for n in m.feature_names),
        defaults=defaults,
        density=("gmm", {}),
        reads=tuple(f for m in members for f in m.reads),
        parts=parts,
    )


METHODS: dict[str, FeatureMethod] = {
    m.name: m
    for m in (
        FeatureMethod(  # Abdi et al. 2025: SSIM-weighted score error, the paper's K = 10
            name="diffpathv2",
            feature_names=("err_l1", "err_l2", "err_l3", "deriv_l1", "deriv_l2", "deriv_l3"),
            compute="v2:v2_features",
            defaults={"timesteps": 10, "draws": 1},
            density=("gmm", {}),  # components chosen by BIC
            evals=lambda c: c.timesteps * c.draws,
            reads=("shared_noise", "ssim_window", "ssim_weighting", "draws"),
        ),
        FeatureMethod(  # Heng & Soh 2024, as in their code: a cross-validated GMM
            name="diffpath6d",
            feature_names=("eps_s1", "eps_s2", "eps_s3", "deriv_s1", "deriv_s2", "deriv_s3"),
            compute="diffpath:diffpath6d_features",
            defaults={"timesteps": 10, "draws": 1},
            density=("gmm", {"selection": "cv"}),
            evals=lambda c: c.timesteps,
        ),
        FeatureMethod(  # and its 1-D feature with a KDE of bandwidth 5
            name="diffpath1d",
            feature_names=("deriv_l2",),
            compute="diffpath:diffpath1d_features",
            defaults={"timesteps": 10, "draws": 1},
            density=("kde", {"bandwidth": 5.0}),
            evals=lambda c: c.timesteps,
        ),
    )
}
# Both side by side, the default: K = 5 and 2 draws, chosen on the benchmark's validation
# split (docs/benchmarks.md).
METHODS["diffpathv2+6d"] = combine(
    "diffpathv2+6d", ("diffpathv2", "diffpath6d"), {"timesteps": 5, "draws": 2}
)


def get_method(name: str) -> FeatureMethod:
    """The method called `name`; an unknown name is refused, never replaced."""
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown feature method {name!r}; choose from {', '.join(METHODS)}"
        ) from None
