"""What each convertible published model costs, built at full size with random weights (no
download): parameters, file size, FLOPs and measured UNet evaluations per second on this
machine in float32 and bfloat16, and images per second for the default method.

    python benchmarks/models.py                      # every preset and the bundled model
    python benchmarks/models.py --presets diffpath-celeba32 --seconds 20

The GPU column is an estimate, not a measurement: the bundled model's H200 rate
(docs/performance.md) scaled by the ratio of FLOPs per evaluation.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from diffpath.config import FeatureConfig
from diffpath.model.convert import PRESETS, build_unet, original_betas, read_flags
from diffpath.model.diffusion import DiffusionModel, load_model

# DiffPathV2 at K = 10 on one H200 in float32 with the bundled model: 1,755 images/s
# (docs/performance.md, scripts/gpu-check.sh), i.e. 17,550 UNet evaluations/s.
H200_BUNDLED_EVALS = 17_550


def flops_per_eval(model: DiffusionModel, size: int) -> float:
    """Forward FLOPs of one image-evaluation (counted on a batch of one)."""
    with FlopCounterMode(display=False) as counter:
        model.predict_noise(torch.zeros(1, 3, size, size), torch.tensor([10]))
    return float(counter.get_total_flops())


def evals_per_second(model: DiffusionModel, size: int, batch: int, seconds: float) -> float:
    """UNet image-evaluations per second at `batch` after one warm-up call."""
    x = torch.randn(batch, 3, size, size)
    t = torch.randint(0, model.num_train_timesteps, (batch,))
    model.predict_noise(x, t)
    done, start = 0, time.perf_counter()
    while done == 0 or time.perf_counter() - start < seconds:
        model.predict_noise(x, t)
        done += batch
    return done / (time.perf_counter() - start)


def models(presets: list[str]):
    """(name, model, image size) for the bundled model and each preset, random weights."""
    yield "bundled (base model v2)", load_model("default", device="cpu"), 32
    for name in presets:
        flags = read_flags(name)
        unet, _ = build_unet(flags)
        schedule = torch.from_numpy(original_betas(flags)).neg().add(1).cumprod(0)
        unet = unet.eval().requires_grad_(False)
        yield name, DiffusionModel(unet, schedule, name), flags.image_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="*", default=list(PRESETS))
    parser.add_argument("--batch", type=int, default=64, help="images per call (32/64 px)")
    parser.add_argument("--large-batch", type=int, default=4, help="images per call at 256 px")
    parser.add_argument("--seconds", type=float, default=30.0, help="timing per dtype")
    args = parser.parse_args()
    evals = FeatureConfig().unet_evals
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; default method: "
        f"{evals} UNet evaluations per image"
    )
    print(
        "| model | px | parameters | fp32 file | GFLOP/eval | batch | CPU evals/s fp32 | "
        "bf16 | CPU images/s (bf16) | H200 images/s (est., fp32) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    bundled_flops = None
    for name, model, size in models(args.presets):
        params = sum(p.numel() for p in model.unet.parameters())
        flops = flops_per_eval(model, size)
        bundled_flops = bundled_flops or flops
        batch = args.batch if size <= 64 else args.large_batch
        rates = []
        for dtype in (torch.float32, torch.bfloat16):
            timed = DiffusionModel(model.unet, model.alphas_cumprod, name, dtype=dtype)
            rates.append(evals_per_second(timed, size, batch, args.seconds))
        gpu = H200_BUNDLED_EVALS * bundled_flops / flops / evals
        print(
            f"| {name} | {size} | {params / 1e6:.1f}M | {4 * params / 2**20:,.0f} MiB | "
            f"{flops / 1e9:.2f} | {batch} | {rates[0]:.2f} | {rates[1]:.2f} | "
            f"{rates[1] / evals:.3f} | {gpu:,.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
