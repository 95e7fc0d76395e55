"""Memorisation check of base models: denoising loss on faces they trained on vs unseen identities.

    python benchmarks/memorisation.py --recipe recipes/v2-cpu.yaml --models default runs/v2-cpu

Both losses use the same fixed noise and timesteps (`diffpath.model.train.validation_loss`), on
`--images` faces drawn from the recipe's first training source (celeba/: prepared like the
validation faces, so only having seen them can make a difference) and from its validation
sources (unseen identities). A model that memorised its faces denoises them clearly
better; the gap column should stay within a few percent. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import yaml

from diffpath.model.diffusion import load_model
from diffpath.model.train import TrainConfig, load_image_tensor, validation_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--recipe", type=Path, required=True, help="TrainConfig YAML")
    parser.add_argument("--models", nargs="+", default=["default"])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    recipe = TrainConfig(**yaml.safe_load(args.recipe.read_text()))
    seen = load_image_tensor(recipe.data[:1], recipe.image_size)
    order = torch.randperm(len(seen), generator=torch.Generator().manual_seed(1))
    seen = seen[order[: args.images]]
    unseen = load_image_tensor(recipe.val_data, recipe.image_size, args.images)
    print(
        f"denoising MSE, fixed noise; {len(seen)} training faces, {len(unseen)} unseen identities"
    )
    print("| model | fingerprint | seen | unseen | gap |\n|---|---|---|---|---|")
    for source in args.models:
        model = load_model(source, device=args.device, dtype=torch.float32)
        a, b = (validation_loss(model.unet, model.alphas_cumprod, x) for x in (seen, unseen))
        print(f"| {source} | {model.model_id} | {a:.5f} | {b:.5f} | {100 * (b / a - 1):+.1f}% |")


if __name__ == "__main__":
    main()
