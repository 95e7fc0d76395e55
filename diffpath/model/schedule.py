"""Which timesteps a feature run visits, and the seeded noise each image gets.

Shared by DiffPathV2 and the DiffPath baseline so both walk the same grid of the model's
training schedule and neither depends on batch size, order or device.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from diffpath.config import FeatureConfig
from diffpath.errors import ConfigError
from diffpath.io.identity import noise_seed

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


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x · c) mod 2³² for x in [0, 2³²) held in int64, without overflowing int64."""
    low = (x & 0xFFFF) * c
    high = (((x >> 16) * c) & 0xFFFF) << 16
    return (low + high) & 0xFFFFFFFF


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """Wellons' lowbias32 integer hash: a bijection of [0, 2³²) with good avalanche."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def image_noise(
    image_ids: Sequence[str],
    seed: int,
    shape: Sequence[int],
    draws: int,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Standard normal noise (B, draws, *shape) on `device`, each image's a pure function of
    (seed, image id — its content hash): the same in any batch, order or device.

    Counter-based, generated for the whole batch in one pass: element j of image i is
    Box–Muller of two uniforms hashed from (image key, 2j) and (image key, 2j + 1).
    """
    keys = torch.tensor([noise_seed(seed, i) for i in image_ids], dtype=torch.int64)
    keys = keys.to(device).view(-1, 1)
    k1, k2 = keys & 0xFFFFFFFF, _hash32(keys >> 32)
    n = draws * int(np.prod(shape))
    counter = torch.arange(2 * n, dtype=torch.int64, device=device).view(1, -1)
    bits = _hash32((_hash32(counter ^ k1) + k2) & 0xFFFFFFFF) ^ counter
    bits = _hash32(bits)
    uniform = ((bits >> 8).double() + 0.5) / 2**24  # (0, 1), 24 bits
    u1, u2 = uniform[:, 0::2], uniform[:, 1::2]
    normal = (-2 * u1.log()).sqrt() * torch.cos(2 * torch.pi * u2)
    return normal.float().view(len(image_ids), draws, *shape)
