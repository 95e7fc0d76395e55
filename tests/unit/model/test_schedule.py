"""The noise schedule: timestep grids and per-image noise independent of the batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffpath.config import FeatureConfig
from diffpath.model.schedule import image_noise, select_timesteps


@pytest.mark.parametrize(
    "spacing,expected",
    [("leading", [0, 100, 200, 300, 400, 500, 600, 700, 800, 900]), ("linear", [0, 333, 666, 999])],
)
def test_timestep_grids(spacing, expected) -> None:
    cfg = FeatureConfig(spacing=spacing, timesteps=len(expected))
    assert select_timesteps(cfg, 1000).tolist() == expected


def test_noise_is_per_image_standard_normal_and_independent_of_the_batch() -> None:
    ids = [f"{i:064x}" for i in range(64)]
    noise = image_noise(ids, 0, (3, 8, 8), 2)
    assert noise.shape == (64, 2, 3, 8, 8)
    assert abs(noise.mean().item()) < 0.02 and abs(noise.std().item() - 1) < 0.02
    torch.testing.assert_close(image_noise(ids[10:12][::-1], 0, (3, 8, 8), 2), noise[[11, 10]])
    flat = noise.flatten(1).numpy()
    correlation = np.corrcoef(flat) - np.eye(64)
    assert np.abs(correlation).max() < 0.2  # 384 values each: |r| of independent draws ≲ 0.2
    assert not torch.equal(image_noise(ids[:1], 1, (3, 8, 8), 2), noise[:1])  # the seed matters
