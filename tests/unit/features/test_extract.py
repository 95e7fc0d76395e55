"""Feature extraction: zero for an oracle, invariant to batching, seeded noise, combinations."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from diffpath.config import FeatureConfig
from diffpath.features.extract import extract_features
from diffpath.model.diffusion import DiffusionModel
from tests.unit.features import SIZE, config, images, keys


class OracleNoise(nn.Module):
    """Returns the true noise for images that all equal `x0` (plus an optional constant error)."""

    def __init__(self, x0: torch.Tensor, alphas_cumprod: torch.Tensor, error: float = 0.0):
        super().__init__()
        self.x0, self.alphas_cumprod, self.error = x0, alphas_cumprod, error

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self.alphas_cumprod[t].float().view(-1, 1, 1, 1)
        return (x_t - a.sqrt() * self.x0) / (1 - a).sqrt() + self.error


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


@pytest.mark.slow
@pytest.mark.parametrize("method", ["diffpathv2", "diffpath6d", "diffpath1d"])
def test_features_do_not_depend_on_batch_size_or_order(tiny_model, method) -> None:
    x, k = images(20), keys(20)
    cfg = config(method=method)
    reference = extract_features(replace(tiny_model, batch_size=64), x, k, cfg)
    # signed power sums cancel, so float32 noise is judged against each column's scale
    scale = np.abs(reference).max(0)
    for batch_size in (1, 7):
        batched = replace(tiny_model, batch_size=batch_size, forward_batch=9)
        got = extract_features(batched, x, k, cfg)
        np.testing.assert_allclose(got / scale, reference / scale, atol=1e-4)
    order = torch.randperm(20, generator=torch.Generator().manual_seed(1))
    batched = replace(tiny_model, batch_size=7)
    shuffled = extract_features(batched, x[order], [k[i] for i in order], cfg)
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


def test_mismatched_inputs_raise(tiny_model) -> None:
    from diffpath.errors import ConfigError

    with pytest.raises(ConfigError):
        extract_features(tiny_model, images(2), keys(3), config())
    with pytest.raises(ConfigError):
        extract_features(tiny_model, images(2), keys(2), FeatureConfig(image_size=32))


def test_a_model_trained_at_another_size_is_refused_with_the_setting(tiny_model) -> None:
    from dataclasses import replace

    from diffpath.errors import ConfigError

    at_64 = replace(tiny_model, sample_size=64)
    with pytest.raises(ConfigError, match=r"trained on 64-px images.*--image-size 64"):
        extract_features(at_64, images(2), keys(2), config())
    assert (
        extract_features(replace(tiny_model, sample_size=SIZE), images(2), keys(2), config()).shape[
            0
        ]
        == 2
    )


@pytest.mark.slow
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
