"""DiffPathV2: the batched pass equals a per-timestep reference loop."""

from __future__ import annotations

import kornia
import numpy as np
import torch

from diffpath.features.extract import extract_features
from diffpath.model.schedule import image_noise, select_timesteps
from tests.unit.features import SIZE, config, images, keys


def test_v2_matches_per_timestep_reference(tiny_model) -> None:
    """The stacked (B·K) forward equals K separate forwards, and each step follows the paper."""
    cfg = config(timesteps=4)
    x, k = images(3), keys(3)
    t = select_timesteps(cfg, tiny_model.num_train_timesteps)
    eps = image_noise(k, cfg.seed, (3, SIZE, SIZE), 1)[:, 0]
    weighted = []
    for step in t:
        a = tiny_model.alphas_cumprod[step].float()
        x_t = a.sqrt() * x + (1 - a).sqrt() * eps
        eps_hat = tiny_model.unet(x_t, step.repeat(3)).sample
        x0_hat = ((x_t - (1 - a).sqrt() * eps_hat) / a.sqrt()).clamp(-1, 1)
        weight = 1 - kornia.metrics.ssim(x, x0_hat, cfg.ssim_window, max_val=2.0)
        weighted.append((weight * (eps_hat - eps)).flatten(1))
    u = torch.stack(weighted, 1)  # (B, K, D)
    d = len(t) * (u[:, 1:] - u[:, :-1])
    expected = [u.norm(p=p, dim=-1).sum(1) for p in (1, 2, 3)]
    expected += [d.norm(p=p, dim=-1).sum(1) for p in (1, 2, 3)]
    got = extract_features(tiny_model, x, k, cfg)
    np.testing.assert_allclose(got, torch.stack(expected, 1).detach().numpy(), rtol=1e-4)


def test_error_maps_are_the_weighted_error_at_every_timestep(tiny_model) -> None:
    """One function draws every error map: the screen's (each image's most telling
    timestep) and the benchmark's (all of them)."""
    from diffpath.features.v2 import error_maps, weighted_errors

    cfg, x, k = config(timesteps=4, draws=2), images(3), keys(3)
    maps, timesteps, telling = error_maps(tiny_model, x, k, cfg)
    u = weighted_errors(tiny_model, x, k, cfg)[:, 0]  # the first draw
    assert maps.shape == (3, 4, SIZE, SIZE) and timesteps.shape == (4,)
    torch.testing.assert_close(maps, u.abs().mean(2))
    norms = torch.linalg.vector_norm(u.flatten(2), dim=-1)
    assert telling.tolist() == norms.argmax(1).tolist()
    assert timesteps.tolist() == select_timesteps(cfg, tiny_model.num_train_timesteps).tolist()
