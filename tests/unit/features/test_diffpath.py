"""The DiffPath baseline: DDIM inversion equals a reference loop."""

from __future__ import annotations

import numpy as np
import torch

from diffpath.features.diffpath import ddim_inversion_eps
from diffpath.features.extract import extract_features
from diffpath.model.schedule import select_timesteps
from tests.unit.features import config, images, keys


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
    got = ddim_inversion_eps(tiny_model, x, t)
    torch.testing.assert_close(got, reference, rtol=1e-4, atol=1e-4)
    eps = reference.flatten(2).double()
    deriv = len(t) * (eps[:, 1:] - eps[:, :-1])
    six = extract_features(tiny_model, x, keys(2), cfg)
    np.testing.assert_allclose(six[:, 1], (eps**2).sum((1, 2)).numpy(), rtol=1e-4)
    np.testing.assert_allclose(six[:, 5], (deriv**3).sum((1, 2)).numpy(), rtol=1e-3)
    one = extract_features(tiny_model, x, keys(2), config(method="diffpath1d", timesteps=5))
    np.testing.assert_allclose(one[:, 0], (deriv**2).sum((1, 2)).sqrt().numpy(), rtol=1e-4)
