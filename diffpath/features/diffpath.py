"""DiffPath baseline features from the DDIM-inversion path (Heng & Soh, NeurIPS 2024).

Deterministic DDIM runs from the image (x_{t_0} = x at t_0 = 0) towards noise over the
N timesteps t_0 < … < t_{N−1}; at each step (guided-diffusion's `ddim_reverse_sample`):

1. ε̂ = ε_θ(x_{t_i}, t_i);  x̂0 = clip((x_{t_i} − √(1−ᾱ) ε̂) / √ᾱ, −1, 1)
2. ε_i = (x_{t_i} − √ᾱ x̂0) / √(1−ᾱ)                     (ε re-derived from the clipped x̂0)
3. x_{t_{i+1}} = √ᾱ_next · x̂0 + √(1−ᾱ_next) · ε_i

Features (signed power sums over steps and pixels, as in the authors' code), with
D_i = N · (ε_{i+1} − ε_i):  6-D = [Σ ε, Σ ε², Σ ε³, Σ D, Σ D², Σ D³];  1-D = √(Σ D²).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from diffpath.config import FeatureConfig
from diffpath.features.v2 import predict_stacked
from diffpath.model.diffusion import DiffusionModel
from diffpath.model.schedule import select_timesteps

__all__ = ["ddim_inversion_eps", "diffpath1d_features", "diffpath6d_features"]


def ddim_inversion_eps(model: DiffusionModel, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """ε_i along the DDIM inversion of x (B, C, H, W) over timesteps t (N,) → (B, N, C, H, W)."""
    x_t = x.to(model.device, torch.float32)
    a = model.alpha_bar(t)
    recorded = []
    for i in range(len(t)):
        eps_hat = predict_stacked(model, x_t, t[i].repeat(len(x_t)))  # step 1
        x0_hat = ((x_t - (1 - a[i]).sqrt() * eps_hat) / a[i].sqrt()).clamp(-1, 1)
        eps = (x_t - a[i].sqrt() * x0_hat) / (1 - a[i]).sqrt()  # step 2
        recorded.append(eps)
        if i + 1 < len(t):
            x_t = a[i + 1].sqrt() * x0_hat + (1 - a[i + 1]).sqrt() * eps  # step 3
    return torch.stack(recorded, dim=1)


def _eps_and_derivative(
    model: DiffusionModel, x: torch.Tensor, config: FeatureConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """ε_i (B, N, C·H·W) along the inversion and D_i = N · (ε_{i+1} − ε_i), in float64."""
    t = select_timesteps(config, model.num_train_timesteps)
    eps = ddim_inversion_eps(model, x, t).flatten(2).double()
    return eps, len(t) * (eps[:, 1:] - eps[:, :-1])


def diffpath6d_features(
    model: DiffusionModel, x: torch.Tensor, ids: Sequence[str], config: FeatureConfig
) -> torch.Tensor:
    """DiffPath 6-D features (B, 6) of images x (B, C, H, W), float32 on CPU (deterministic:
    `ids` unused)."""
    eps, derivative = _eps_and_derivative(model, x, config)
    sums = [(v**p).sum((1, 2)) for v in (eps, derivative) for p in (1, 2, 3)]
    return torch.stack(sums, dim=1).float().cpu()


def diffpath1d_features(
    model: DiffusionModel, x: torch.Tensor, ids: Sequence[str], config: FeatureConfig
) -> torch.Tensor:
    """DiffPath 1-D feature (B, 1): √(Σ D²), float32 on CPU."""
    _, derivative = _eps_and_derivative(model, x, config)
    return (derivative**2).sum((1, 2)).sqrt().unsqueeze(1).float().cpu()
