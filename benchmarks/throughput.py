"""Feature-extraction throughput on this machine (images/s), per method and UNet size.

    python benchmarks/throughput.py --images 64 --timesteps 10

"cifar10-32" is a randomly initialised UNet of the google/ddpm-cifar10-32 shape (35.7M
parameters); "small" is (32, 64, 64) with one layer per block; "default" is the bundled model.
"""

from __future__ import annotations

import argparse
import time

import torch

from diffpath.config import FeatureConfig
from diffpath.features import extract_features
from diffpath.model import DEFAULT_MODEL_DIR, DiffusionModel, load_model


def random_model(kind: str) -> DiffusionModel:
    from diffusers import DDPMScheduler, UNet2DModel

    if kind == "cifar10-32":
        unet = UNet2DModel(
            sample_size=32,
            block_out_channels=(128, 256, 256, 256),
            layers_per_block=2,
            down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        )
    else:
        unet = UNet2DModel(
            sample_size=32,
            block_out_channels=(32, 64, 64),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        )
    schedule = DDPMScheduler(num_train_timesteps=1000).alphas_cumprod.double()
    return DiffusionModel(unet.eval().requires_grad_(False), schedule, model_id=kind)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--timesteps", type=int, default=10)
    parser.add_argument("--models", nargs="*", default=["small", "cifar10-32", "default"])
    parser.add_argument("--methods", nargs="*", default=["diffpathv2", "diffpath6d"])
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{args.images} images of 32x32, K={args.timesteps}"
    )
    x = torch.rand(args.images, 3, 32, 32) * 2 - 1
    keys = [str(i) for i in range(args.images)]
    for name in args.models:
        if name == "default" and not DEFAULT_MODEL_DIR.exists():
            continue
        model = load_model("default", device="cpu") if name == "default" else random_model(name)
        params = sum(p.numel() for p in model.unet.parameters()) / 1e6
        for method in args.methods:
            config = FeatureConfig(method=method, timesteps=args.timesteps)
            extract_features(model, x[:2], keys[:2], config)  # warm-up
            start = time.perf_counter()
            extract_features(model, x, keys, config)
            seconds = time.perf_counter() - start
            print(
                f"{name:11s} {params:5.1f}M {method:11s} {args.images / seconds:7.2f} images/s "
                f"({args.images * args.timesteps / seconds:6.1f} UNet evals/s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
