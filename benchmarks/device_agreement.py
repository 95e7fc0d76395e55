"""Do features computed on this machine's accelerator agree with the CPU's?

    python benchmarks/device_agreement.py --data ../shared/data/cifar10/test.parquet

For 128 real images (bundled samples if no --data): the per-image noise on the device vs
the CPU, and DiffPathV2 / DiffPath-6D features of the bundled model on the device (float32
and bfloat16 autocast) vs the CPU in float32, as the largest deviation over images in units
of each feature's spread across the images (0.01 = 1% of the spread), and images/s.
On a CPU (`--device cpu`) it measures bfloat16 autocast against float32 (AMX, AVX-512 BF16).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from diffpath.config import FeatureConfig
from diffpath.features.extract import extract_features
from diffpath.io.sources import list_source, load_images, subsample
from diffpath.model.diffusion import load_model
from diffpath.model.schedule import image_noise

SAMPLES = Path(__file__).resolve().parents[1] / "diffpath" / "assets" / "samples"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=SAMPLES / "incoming.parquet")
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    x, ids, _ = load_images(subsample(list_source(str(args.data)), args.images, seed=0))
    on_cpu = image_noise(ids, 0, (3, 32, 32), 1)
    on_device = image_noise(ids, 0, (3, 32, 32), 1, args.device).cpu()
    print(f"noise, {args.device} vs cpu: max |difference| {(on_cpu - on_device).abs().max():.2e}")
    cpu = load_model(device="cpu")
    for method in ("diffpathv2", "diffpath6d", "diffpathv2+6d"):
        reference = extract_features(cpu, x, ids, FeatureConfig(method=method))
        spread = reference.std(0)
        for dtype in ("float32", "bfloat16"):
            model = load_model(device=args.device, dtype=getattr(torch, dtype))
            start = time.perf_counter()
            values = extract_features(model, x, ids, FeatureConfig(method=method, dtype=dtype))
            rate = len(ids) / (time.perf_counter() - start)
            worst = (np.abs(values - reference).max(0) / spread).max()
            print(
                f"{method:13s} {dtype:9s} on {args.device} vs cpu float32: "
                f"max deviation {worst:.4f} of a feature's spread ({len(ids)} images), "
                f"{rate:.1f} images/s",
                flush=True,
            )


if __name__ == "__main__":
    main()
