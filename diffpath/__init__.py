"""diffpath: zero-shot image OOD screening with a pretrained diffusion model.

>>> import diffpath
>>> ref = diffpath.fit_reference("trusted/")          # folders, Parquet, s3://, images
>>> result = ref.screen("incoming/", fpr=0.01)        # a table of scores, errors, alerts
>>> result.write("out/")                              # the CLI's outputs and report

The building blocks underneath (`diffpath.api` composes them as the CLI's flows do):

>>> from diffpath import FeatureConfig, GMMDensity, extract_features, load_model
>>> config = FeatureConfig()          # V2 (K=5, 2 draws) ⧺ DiffPath-6D (K=5): 12-D
>>> model = load_model("default", dtype=config.torch_dtype)  # or a folder, a hub id
>>> features = extract_features(model, images, hashes, config)  # images (N,3,32,32)
>>> density = GMMDensity().fit(reference_features)
>>> anomaly = density.anomaly_score(features)      # higher = more anomalous

Names are imported on first use, so `import diffpath` (and the CLI's --help) stays fast.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("diffpath")
except PackageNotFoundError:  # run from a source tree that was not installed
    __version__ = "0+unknown"

_WHERE = {
    "fit_reference": "api",
    "load_reference": "api",
    "evaluate": "api",
    "Run": "api",
    "TrustedReference": "api",
    "ScreenResult": "api",
    "AuditResult": "api",
    "EvaluateResult": "api",
    "FeatureConfig": "config",
    "GaussianDensity": "scoring.density",
    "GMMDensity": "scoring.density",
    "KDEDensity": "scoring.density",
    "load_density": "scoring.density",
    "make_density": "scoring.density",
    "save_density": "scoring.density",
    "AlertError": "errors",
    "ConfigError": "errors",
    "ConfigMismatchError": "errors",
    "DecodeError": "errors",
    "DiffPathError": "errors",
    "ModelError": "errors",
    "NotFittedError": "errors",
    "StorageError": "errors",
    "extract_features": "features.extract",
    "feature_names": "features.extract",
    "decode_image": "io.images",
    "decode_images": "io.images",
    "calibrate_threshold": "scoring.conformal",
    "conformal_p_values": "scoring.conformal",
    "ood_metrics": "scoring.metrics",
    "DiffusionModel": "model.diffusion",
    "load_model": "model.diffusion",
    "convert_model": "model.convert",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> object:
    if name not in _WHERE:
        raise AttributeError(f"module 'diffpath' has no attribute {name!r}")
    return getattr(import_module(f"diffpath.{_WHERE[name]}"), name)
