"""Per-image features for OOD scoring: DiffPathV2 and the DiffPath baseline."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from diffpath.config import FeatureConfig
from diffpath.errors import ConfigError
from diffpath.methods import get_method
from diffpath.model.diffusion import DiffusionModel

__all__ = ["extract_features", "feature_names"]


def feature_names(method: str) -> tuple[str, ...]:
    """Column names of the features a method produces (a combination: its parts' names)."""
    return get_method(method).feature_names


@torch.inference_mode()
def extract_features(
    model: DiffusionModel,
    images: torch.Tensor,
    image_ids: Sequence[str],
    config: FeatureConfig,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Features (N, D) of images (N, C, H, W) in [−1, 1], in batches of the model's
    `batch_size` (`DiffusionModel.batch_sizes`).

    `image_ids` are the images' content hashes (they seed each image's noise, so a feature
    depends on the bytes only); `progress(n)` is called
    with the number of images done after each batch.
    """
    if len(parts := config.parts()) > 1:  # progress is reported once, by the last part
        reports = [progress if p is parts[-1] else None for p in parts]
        features = [
            extract_features(model, images, image_ids, p, report)
            for p, report in zip(parts, reports, strict=True)
        ]
        return np.hstack(features)
    if len(image_ids) != len(images):
        raise ConfigError(f"{len(images)} images but {len(image_ids)} image ids")
    if images.shape[-1] != config.image_size or images.shape[-2] != config.image_size:
        raise ConfigError(
            f"images are {tuple(images.shape[-2:])}, config expects {config.image_size}px"
        )
    if model.sample_size not in (None, config.image_size):
        raise ConfigError(
            f"model {model.model_id} was trained on {model.sample_size}-px images but the "
            f"feature config asks for {config.image_size} px: set image_size: "
            f"{model.sample_size} (--image-size {model.sample_size})"
        )
    if model.dtype != config.torch_dtype:
        raise ConfigError(
            f"model runs in {model.dtype} but the config asks for {config.dtype}; "
            f"load it with load_model(..., dtype=config.torch_dtype)"
        )
    method = get_method(config.method)
    compute = method.function()
    out = np.empty((len(images), len(method.feature_names)), dtype=np.float32)
    size = model.batch_sizes[0]
    for start in range(0, len(images), size):
        batch = images[start : start + size]
        batch_ids = image_ids[start : start + size]
        if model.device.type == "cuda":  # page-locked, so the copy overlaps the model
            batch = batch.pin_memory().to(model.device, non_blocking=True)
        values = compute(model, batch, batch_ids, config)
        out[start : start + len(batch)] = values.numpy()
        if progress:
            progress(len(batch))
    return out
