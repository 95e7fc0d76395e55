"""diffpath: zero-shot image OOD screening with a pretrained diffusion model.

>>> from diffpath import FeatureConfig, GMMDensity, extract_features, load_model
>>> config = FeatureConfig()                       # DiffPathV2, K=10
>>> model = load_model(config.model, dtype=config.torch_dtype)
>>> features = extract_features(model, images, keys, config)   # images (N,3,32,32)
>>> density = GMMDensity().fit(reference_features)
>>> anomaly = density.anomaly_score(features)      # higher = more anomalous
"""

from diffpath.config import FeatureConfig
from diffpath.density import (
    GaussianDensity,
    GMMDensity,
    KDEDensity,
    load_density,
    make_density,
    save_density,
)
from diffpath.errors import (
    ConfigError,
    ConfigMismatchError,
    DecodeError,
    DiffPathError,
    ModelError,
    NotFittedError,
    StorageError,
)
from diffpath.features import extract_features, feature_names
from diffpath.images import decode_image, decode_images
from diffpath.metrics import calibrate_threshold, ood_metrics
from diffpath.model import DiffusionModel, load_model

__all__ = [
    "ConfigError",
    "ConfigMismatchError",
    "DecodeError",
    "DiffPathError",
    "DiffusionModel",
    "FeatureConfig",
    "GMMDensity",
    "GaussianDensity",
    "KDEDensity",
    "ModelError",
    "NotFittedError",
    "StorageError",
    "calibrate_threshold",
    "decode_image",
    "decode_images",
    "extract_features",
    "feature_names",
    "load_density",
    "load_model",
    "make_density",
    "ood_metrics",
    "save_density",
]
