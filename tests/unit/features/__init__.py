"""Tests of diffpath.features; small random images, their keys and configs shared by them."""

from __future__ import annotations

import torch

from diffpath.config import FeatureConfig

SIZE = 16


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def keys(n: int) -> list[str]:
    return [f"img/{i:03d}.png" for i in range(n)]


def config(**kw) -> FeatureConfig:
    return FeatureConfig(**{"method": "diffpathv2", "image_size": SIZE, **kw})
