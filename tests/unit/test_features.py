"""DiffPathV2 and DiffPath features: the maths, against references written out here."""

import kornia
import numpy as np
import pytest
import torch
from torch import nn

from diffpath.config import FeatureConfig
from diffpath.features.diffpath import ddim_inversion_eps
from diffpath.features.extract import extract_features
from diffpath.model.diffusion import DiffusionModel
from diffpath.model.schedule import image_noise, select_timesteps

SIZE = 16


class OracleNoise(nn.Module):
    """Returns the true noise for images that all equal `x0` (plus an optional constant error)."""

    def __init__(self, x0: torch.Tensor, alphas_cumprod: torch.Tensor, error: float = 0.0):
        super().__init__()
        self.x0, self.alphas_cumprod, self.error = x0, alphas_cumprod, error

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self.alphas_cumprod[t].float().view(-1, 1, 1, 1)
        return (x_t - a.sqrt() * self.x0) / (1 - a).sqrt() + self.error


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def keys(n: int) -> list[str]:
    return [f"img/{i:03d}.png" for i in range(n)]


def config(**kw) -> FeatureConfig:
    return FeatureConfig(**{"method": "diffpathv2", "image_size": SIZE, **kw})


def oracle_model(tiny_model: DiffusionModel, x0: torch.Tensor, error: float) -> DiffusionModel:
    return DiffusionModel(
        OracleNoise(x0, tiny_model.alphas_cumprod, error), tiny_model.alphas_cumprod
    )


def test_oracle_model_gives_zero_features(tiny_model) -> None:
    x0 = images(1) * 0.9
    x = x0.repeat(5, 1, 1, 1)
    features = extract_features(oracle_model(tiny_model, x0, 0.0), x, keys(5), config())
    np.testing.assert_allclose(features, 0.0, atol=1e-3)


def test_constant_error_gives_zero_derivative_features(tiny_model) -> None:
    x0 = images(1) * 0.9
    x = x0.repeat(4, 1, 1, 1)
    model = oracle_model(tiny_model, x0, 0.25)
    features = extract_features(model, x, keys(4), config(ssim_weighting=False))
    l1 = 0.25 * 3 * SIZE * SIZE * 10  # Σ_k ‖0.25‖_1 over K=10 timesteps
    np.testing.assert_allclose(features[:, 0], l1, rtol=1e-3)
    np.testing.assert_allclose(features[:, 3:], 0.0, atol=1e-2)


@pytest.mark.parametrize("method", ["diffpathv2", "diffpath6d", "diffpath1d"])
def test_features_do_not_depend_on_batch_size_or_order(tiny_model, method) -> None:
    x, k = images(20), keys(20)
    reference = extract_features(tiny_model, x, k, config(method=method, batch_size=64))
    # signed power sums cancel, so float32 noise is judged against each column's scale
    scale = np.abs(reference).max(0)
    for batch_size in (1, 7):
        cfg = config(method=method, batch_size=batch_size, forward_batch=9)
        got = extract_features(tiny_model, x, k, cfg)
        np.testing.assert_allclose(got / scale, reference / scale, atol=1e-4)
    order = torch.randperm(20, generator=torch.Generator().manual_seed(1))
    cfg = config(method=method, batch_size=7)
    shuffled = extract_features(tiny_model, x[order], [k[i] for i in order], cfg)
    np.testing.assert_allclose(shuffled / scale, reference[order.numpy()] / scale, atol=1e-4)


def test_seed_controls_the_noise(tiny_model) -> None:
    x, k = images(6), keys(6)
    a = extract_features(tiny_model, x, k, config(seed=1))
    np.testing.assert_array_equal(a, extract_features(tiny_model, x, k, config(seed=1)))
    assert not np.allclose(a, extract_features(tiny_model, x, k, config(seed=2)))
    assert not np.allclose(
        a, extract_features(tiny_model, x, k, config(seed=1, shared_noise=False))
    )


def test_noise_draws_average_and_keep_the_first_draw(tiny_model) -> None:
    from diffpath.features.v2 import weighted_errors

    x, k = images(4), keys(4)
    one = weighted_errors(tiny_model, x, k, config(shared_noise=False))
    two = weighted_errors(tiny_model, x, k, config(shared_noise=False, draws=2))
    assert two.shape[:3] == (4, 2, 10)
    torch.testing.assert_close(two[:, 0], one[:, 0])  # draw 0 does not depend on `draws`
    assert not torch.allclose(two[:, 0], two[:, 1])
    single = extract_features(tiny_model, x, k, config())
    mean = extract_features(tiny_model, x, k, config(draws=3))
    assert mean.shape == single.shape and not np.allclose(mean, single)


def test_a_combination_concatenates_its_parts(tiny_model) -> None:
    x, k = images(3), keys(3)
    cfg = config(method="diffpathv2+6d", timesteps=4, draws=2)
    parts = [extract_features(tiny_model, x, k, part) for part in cfg.parts()]
    np.testing.assert_array_equal(extract_features(tiny_model, x, k, cfg), np.hstack(parts))


def test_v2_matches_per_timestep_reference(tiny_model) -> None:
    """The stacked (B·K) forward equals K separate forwards, and each step follows the paper."""
    cfg = config(timesteps=4, batch_size=64)
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


def test_ddim_inversion_matches_reference_loop(tiny_model) -> None:
    cfg = config(method="diffpath6d", timesteps=5)
    x = images(2)
    t = select_timesteps(cfg, tiny_model.num_train_timesteps)
    recorded = []
    for i in range(2):  # one image at a time, scalar ᾱ, plain DDIM (η = 0) inversion
        x_t, path = x[i : i + 1], []
        for j, step in enumerate(t.tolist()):
            a = float(tiny_model.alphas_cumprod[step])
            eps_hat = tiny_model.unet(x_t, torch.tensor([step])).sample
            x0_hat = ((x_t - (1 - a) ** 0.5 * eps_hat) / a**0.5).clamp(-1, 1)
            eps = (x_t - a**0.5 * x0_hat) / (1 - a) ** 0.5
            path.append(eps[0])
            if j + 1 < len(t):
                a_next = float(tiny_model.alphas_cumprod[t[j + 1]])
                x_t = a_next**0.5 * x0_hat + (1 - a_next) ** 0.5 * eps
        recorded.append(torch.stack(path))
    reference = torch.stack(recorded).detach()
    got = ddim_inversion_eps(tiny_model, x, t, chunk=64)
    torch.testing.assert_close(got, reference, rtol=1e-4, atol=1e-4)
    eps = reference.flatten(2).double()
    deriv = len(t) * (eps[:, 1:] - eps[:, :-1])
    six = extract_features(tiny_model, x, keys(2), cfg)
    np.testing.assert_allclose(six[:, 1], (eps**2).sum((1, 2)).numpy(), rtol=1e-4)
    np.testing.assert_allclose(six[:, 5], (deriv**3).sum((1, 2)).numpy(), rtol=1e-3)
    one = extract_features(tiny_model, x, keys(2), config(method="diffpath1d", timesteps=5))
    np.testing.assert_allclose(one[:, 0], (deriv**2).sum((1, 2)).sqrt().numpy(), rtol=1e-4)


@pytest.mark.parametrize(
    "spacing,expected",
    [("leading", [0, 100, 200, 300, 400, 500, 600, 700, 800, 900]), ("linear", [0, 333, 666, 999])],
)
def test_timestep_grids(spacing, expected) -> None:
    cfg = FeatureConfig(spacing=spacing, timesteps=len(expected))
    assert select_timesteps(cfg, 1000).tolist() == expected


def test_mismatched_inputs_raise(tiny_model) -> None:
    from diffpath.errors import ConfigError

    with pytest.raises(ConfigError):
        extract_features(tiny_model, images(2), keys(3), config())
    with pytest.raises(ConfigError):
        extract_features(tiny_model, images(2), keys(2), FeatureConfig(image_size=32))


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


# 6D integrates a DDIM path, so bf16 error accumulates: 0.096 of the spread on an H200 with
# base model v1 (docs/performance.md), 0.098 on this CPU with v2.
@pytest.mark.parametrize("method, tolerance", [("diffpathv2", 0.03), ("diffpath6d", 0.12)])
def test_bfloat16_features_agree_with_float32(method, tolerance) -> None:
    """bf16 autocast (the fast path on GPUs) moves each feature by less than `tolerance` of
    its spread across images, on the bundled model and real images."""
    from diffpath.io.sources import list_source, load_images, subsample
    from diffpath.model.diffusion import load_model
    from tests.conftest import SAMPLES

    x, ids, _ = load_images(subsample(list_source(str(SAMPLES / "incoming.parquet")), 24, 0))
    full = extract_features(load_model(device="cpu"), x, ids, FeatureConfig(method=method))
    half = extract_features(
        load_model(device="cpu", dtype=torch.bfloat16),
        x,
        ids,
        FeatureConfig(method=method, dtype="bfloat16"),
    )
    assert (np.abs(full - half).max(0) / full.std(0)).max() < tolerance
    assert not np.array_equal(full, half)  # bf16 really ran
