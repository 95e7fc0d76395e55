"""Short base-model training trials: validation loss reached per wall-clock minute.

    python benchmarks/train_trials.py --minutes 6 --out runs/trials

Each candidate trains for the same wall time on CelebA train; the printed table gives
steps done and EMA validation loss on CelebA test faces, to pick what learns most per hour.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from diffpath.model.train import TrainConfig, build_unet, train

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "celeba"

CANDIDATES = {
    "c32-64-64_bs64": dict(block_out_channels=(32, 64, 64), batch_size=64),
    "c32-64-128-256_bs64": dict(block_out_channels=(32, 64, 128, 256), batch_size=64),
    "c64-128-256_bs32": dict(block_out_channels=(64, 128, 256), batch_size=32),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=6.0)
    parser.add_argument("--out", default="runs/trials")
    parser.add_argument("--only", nargs="*", default=list(CANDIDATES))
    args = parser.parse_args()
    rows = []
    for name in args.only:
        config = TrainConfig(
            data=[str(DATA / "train.parquet")],
            val_data=[str(DATA / "test.parquet")],
            steps=100_000,
            checkpoint_every=100,
            **CANDIDATES[name],
        )
        params = sum(p.numel() for p in build_unet(config).parameters())
        out = f"{args.out}/{name}"
        train(config, out, max_minutes=args.minutes, samples=0)
        history = json.loads(Path(out, "history.json").read_text())
        rows.append((name, params, history[-1]["step"], history[-1]["val_loss"]))
        print(
            f"{name}: {params / 1e6:.2f}M params, {rows[-1][2]} steps, val {rows[-1][3]:.4f}",
            flush=True,
        )
    print("\ncandidate | params | steps | val loss (EMA) after", args.minutes, "min")
    for name, params, steps, val in rows:
        print(f"{name} | {params / 1e6:.2f}M | {steps} | {val:.4f}")


if __name__ == "__main__":
    main()
