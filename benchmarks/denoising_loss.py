"""Sanity check of a base model: denoising loss per dataset and timestep.

    python benchmarks/denoising_loss.py --model default --images 256

A model trained on CelebA faces should denoise held-out faces (other identities) better
than CIFAR-10 images or DTD textures at every timestep: that gap is what DiffPath uses.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from shared_sets import DATA_DIR, shared_sets

from diffpath.io.sources import list_source, load_images, subsample
from diffpath.model.diffusion import load_model
from diffpath.model.schedule import image_noise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="default")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--timesteps", type=int, nargs="*", default=[10, 100, 250, 500, 750])
    args = parser.parse_args()
    model = load_model(args.model, device=args.device)
    print(f"model {model.model_id}; mean squared error of ε̂ per timestep, {args.images} images")
    print(f"{'dataset':>14s} " + " ".join(f"t={t:<6d}" for t in args.timesteps))
    sets = shared_sets(args.data_dir)
    for name in ("celeba-test", "cifar10", "dtd", "tinyimagenet"):
        path, crop = sets[name]
        refs = subsample(list_source(str(path)), args.images, seed=0)
        images, hashes, _ = load_images(refs, 32, crop)
        images = images.to(model.device)
        noise = image_noise(hashes, 0, images.shape[1:], 1, model.device)[:, 0]
        losses = []
        for t in args.timesteps:
            a = model.alphas_cumprod[t].float()
            x_t = a.sqrt() * images + (1 - a).sqrt() * noise
            steps = torch.full((len(images),), t)
            eps = torch.cat(
                [
                    model.predict_noise(x, s)
                    for x, s in zip(x_t.split(64), steps.split(64), strict=True)
                ]
            )
            losses.append(torch.mean((eps - noise) ** 2).item())
        print(f"{name:>14s} " + " ".join(f"{v:<8.4f}" for v in losses), flush=True)


if __name__ == "__main__":
    main()
