"""DiffPathV2 features: SSIM-weighted score error along K noise levels (Abdi et al. 2025).

For an image batch x (B, C, H, W) and timesteps t_1 < … < t_K:

1. x_t = √ᾱ_t · x + √(1−ᾱ_t) · ε,  ε seeded by the image's hash   (forward process)
2. ε̂ = ε_θ(x_t, t) for all K timesteps in one stacked forward (B·K, C, H, W)
3. e_t = ε̂ − ε                                                     (Stein score error)
4. x̂0_t = clip((x_t − √(1−ᾱ_t) · ε̂) / √ᾱ_t, −1, 1)                 (Tweedie estimate)
5. u_t = (1 − SSIM(x, x̂0_t)) ⊙ e_t,  SSIM per pixel and channel   (perceptual weight)
6. f = [Σ_k ‖u_k‖_p]_{p=1,2,3} ⧺ [Σ_k ‖K·(u_{k+1} − u_k)‖_p]_{p=1,2,3}   (6 numbers)

With `draws` > 1, steps 1–6 repeat with independent noise and f is their mean: one draw
is a noisy measurement (two draws correlate 0.75–0.88 per face image).
"""

from __future__ import annotations

from collections.abc import Sequence

import kornia
import torch

from diffpath.config import FeatureConfig
from diffpath.model.diffusion import DiffusionModel
from diffpath.model.schedule import image_noise, select_timesteps

__all__ = ["error_maps", "predict_stacked", "v2_features", "weighted_errors"]


def predict_stacked(model: DiffusionModel, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """ε̂ for every (image, timestep) pair: x_t (N, C, H, W), t (N,), in calls of the
    model's `forward_batch` rows (`DiffusionModel.batch_sizes`)."""
    chunk = model.batch_sizes[1]
    chunks = zip(x_t.split(chunk), t.split(chunk), strict=True)
    return torch.cat([model.predict_noise(xs, ts) for xs, ts in chunks])


def _norms(u: torch.Tensor) -> list[torch.Tensor]:
    """Σ over the time axis of ‖u‖_p over (C, H, W) for p = 1, 2, 3: u (B, K, C, H, W) → 3×(B,)."""
    flat = u.flatten(2)
    return [torch.linalg.vector_norm(flat, ord=p, dim=-1).sum(1) for p in (1, 2, 3)]


def weighted_errors(
    model: DiffusionModel, x: torch.Tensor, image_ids: Sequence[str], config: FeatureConfig
) -> torch.Tensor:
    """Steps 1–5: the (1 − SSIM)-weighted score errors u (B, draws, K, C, H, W) on the
    model's device of images x (B, C, H, W) in [−1, 1] — what the model cannot explain, per
    pixel; `image_ids` (content hashes) seed each image's noise (draw 0 is the same noise
    whatever `draws` is)."""
    b, c, h, w = x.shape
    t = select_timesteps(config, model.num_train_timesteps)
    n, k = config.draws, len(t)
    x = x.to(model.device, torch.float32)
    per_draw = 1 if config.shared_noise else k
    eps = image_noise(image_ids, config.seed, (c, h, w), n * per_draw, model.device)
    eps = eps.view(b, n, per_draw, c, h, w).expand(b, n, k, c, h, w).flatten(1, 2)
    a = model.alpha_bar(t).repeat(n).view(1, n * k, 1, 1, 1)
    x0 = x.unsqueeze(1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps  # step 1
    eps_hat = predict_stacked(model, x_t.flatten(0, 1), t.repeat(b * n))
    eps_hat = eps_hat.view(b, n * k, c, h, w)  # step 2
    error = eps_hat - eps  # step 3
    if config.ssim_weighting:
        x0_hat = ((x_t - (1 - a).sqrt() * eps_hat) / a.sqrt()).clamp(-1, 1)  # step 4
        ssim = kornia.metrics.ssim(
            x0.expand_as(x0_hat).flatten(0, 1),
            x0_hat.flatten(0, 1),
            config.ssim_window,
            max_val=2.0,
        ).view(b, n * k, c, h, w)
        error = (1 - ssim) * error  # step 5
    return error.view(b, n, k, c, h, w)


def v2_features(
    model: DiffusionModel, x: torch.Tensor, image_ids: Sequence[str], config: FeatureConfig
) -> torch.Tensor:
    """DiffPathV2 features of images x (B, C, H, W) in [−1, 1] → (B, 6), float32 on CPU."""
    error = weighted_errors(model, x, image_ids, config).flatten(0, 1)  # (B·draws, K, …)
    derivative = error.shape[1] * (error[:, 1:] - error[:, :-1])
    features = torch.stack(_norms(error) + _norms(derivative), dim=1)  # step 6
    return features.view(len(x), config.draws, -1).mean(1).cpu()


@torch.inference_mode()
def error_maps(
    model: DiffusionModel, x: torch.Tensor, image_ids: Sequence[str], config: FeatureConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where the model cannot explain each image: |u_k| averaged over channels at every
    timestep, of the first noise draw → (maps (B, K, H, W), timesteps (K,), each image's
    most telling k (B,): its largest ‖u_k‖₂), on the CPU."""
    error = weighted_errors(model, x, image_ids, config)[:, 0].cpu()  # the first noise draw
    telling = torch.linalg.vector_norm(error.flatten(2), dim=-1).argmax(1)
    t = select_timesteps(config, model.num_train_timesteps)
    return error.abs().mean(2), t.cpu(), telling
