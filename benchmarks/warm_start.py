"""Warm-start the bundled model for a few minutes on CelebA train, then measure it.

    python benchmarks/warm_start.py --minutes 5 --out gpu-check/model --device cuda

Trains from the bundled weights (`init="default"`, its architecture and schedule) on
CelebA train with CelebA test as validation, saves the EMA model under --out (kept), then
prints the denoising-loss sanity table and the shared-data AUROC of the new model next to
the bundled one.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from shared_sets import DATA_DIR, shared_sets

from diffpath.model import DEFAULT_MODEL_DIR
from diffpath.train import TrainConfig, train

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--out", default="gpu-check/model")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--device", default=None)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--images", type=int, default=200, help="per set, for the AUROC")
    args = parser.parse_args()
    sets = shared_sets(args.data_dir)
    bundled = json.loads((DEFAULT_MODEL_DIR / "train_config.json").read_text())
    config = TrainConfig(
        **{k: v for k, v in bundled.items() if k not in ("data", "val_data", "init", "steps")},
        data=[str(sets["celeba-train"][0])],
        val_data=[str(sets["celeba-test"][0])],
        init="default",
        steps=1_000_000,
    ).model_copy(update={"batch_size": args.batch_size})
    out = train(config, args.out, device=args.device, max_minutes=args.minutes)
    print(f"warm-started model saved to {out}", flush=True)
    device = ["--device", args.device] if args.device else []
    for model in ("default", out):
        for script, extra in (
            ("denoising_loss.py", []),
            ("shared_auroc.py", ["--images", str(args.images)]),
        ):
            subprocess.run(
                [
                    sys.executable,
                    str(HERE / script),
                    "--model",
                    model,
                    "--data-dir",
                    str(args.data_dir),
                    *device,
                    *extra,
                ],
                check=True,
            )


if __name__ == "__main__":
    main()
