"""Images drawn from a trained UNet: what a person looks at to judge a base model."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

__all__ = ["sample_grid"]


@torch.no_grad()
def sample_grid(
    unet: nn.Module, scheduler: Any, image_size: int, seed: int, n: int = 64, steps: int = 50
):
    """`n` images drawn with DDIM in `steps` steps of the model's noise `scheduler`
    (seeded), tiled into a square PIL image."""
    from diffusers import DDIMScheduler
    from PIL import Image

    ddim = DDIMScheduler.from_config(scheduler.config)
    ddim.set_timesteps(steps)
    device = next(unet.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, image_size, image_size, generator=generator).to(device)
    for t in ddim.timesteps:
        x = ddim.step(unet(x, t.to(device)).sample, t, x).prev_sample
    pixels = ((x.clamp(-1, 1) + 1) * 127.5).round().byte().cpu()
    side = math.ceil(math.sqrt(n))
    grid = torch.zeros(3, side * image_size, side * image_size, dtype=torch.uint8)
    for i, image in enumerate(pixels):
        r, c = divmod(i, side)
        grid[:, r * image_size : (r + 1) * image_size, c * image_size : (c + 1) * image_size] = (
            image
        )
    return Image.fromarray(grid.permute(1, 2, 0).numpy())
