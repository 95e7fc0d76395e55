"""Which timesteps a feature run visits, and the seeded noise each image gets.

Shared by DiffPathV2 and the DiffPath baseline so both walk the same grid of the model's
training schedule and neither depends on batch size or order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from diffpath.config import FeatureConfig
from diffpath.errors import ConfigError
from diffpath.identity import noise_seed

__all__ = ["image_noise", "select_timesteps"]


def select_timesteps(config: FeatureConfig, num_train_timesteps: int) -> torch.Tensor:
    """K increasing integer timesteps in [t_start, t_end] of a T-step schedule, shape (K,).

    ``leading``: t_start + k·⌊(t_end − t_start + 1)/K⌋ (DDIM's respacing: 0, 100, …, 900
    for T=1000, K=10); ``linear``: evenly spaced including both ends; ``quadratic``:
    denser at small t.
    """
    start, end, k = config.t_start, config.t_end, config.timesteps
    end = num_train_timesteps - 1 if end is None else end
    if end >= num_train_timesteps or start >= end:
        raise ConfigError(
            f"timestep range [{start}, {end}] does not fit a schedule of "
            f"{num_train_timesteps} steps"
        )
    if config.spacing == "leading":
        steps = start + np.arange(k) * ((end - start + 1) // k)
    elif config.spacing == "linear":
        steps = np.linspace(start, end, k).round()
    else:
        steps = start + (np.linspace(0.0, np.sqrt(end - start), k) ** 2).round()
    steps = steps.astype(np.int64)
    if len(np.unique(steps)) != k:
        raise ConfigError(f"{config.spacing} spacing gives repeated timesteps: {steps.tolist()}")
    return torch.from_numpy(steps)


def image_noise(
    image_ids: Sequence[str], seed: int, shape: Sequence[int], draws: int
) -> torch.Tensor:
    """Standard normal noise (B, draws, *shape), each image's from a generator seeded by
    (seed, image id — its content hash): the same in any batch, order or device."""
    out = torch.empty(len(image_ids), draws, *shape)
    for i, image_id in enumerate(image_ids):
        generator = torch.Generator().manual_seed(noise_seed(seed, image_id))
        out[i] = torch.randn(draws, *shape, generator=generator)
    return out
