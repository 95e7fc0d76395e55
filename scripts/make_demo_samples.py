"""Build the bundled demo samples from ../shared/data (run once; outputs are committed).

    python scripts/make_demo_samples.py

reference.parquet: 120 CelebA train faces. incoming.parquet: 60 CelebA test faces (other
identities), 30 CIFAR-10 test images, 30 DTD textures (small, so the demo runs in minutes
on CPU). Every image goes through `decode_image` to 32×32 (CelebA: `center_crop=140`, the
pixel crop they were made with; on CelebA's 178×218 frames it is the `celeba-face` box) and
is stored as lossless PNG, with `path` prefixed by its group (faces/, cifar10/, textures/).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from diffpath.io.images import decode_image

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "diffpath" / "assets" / "samples"


def pick(file: Path, n: int, prefix: str, crop: int | None, seed: int) -> list[dict]:
    table = pq.read_table(file)
    rows = np.sort(np.random.default_rng(seed).choice(len(table), n, replace=False))
    out = []
    for row in table.take(rows).to_pylist():
        pixels = (
            (decode_image(row["image"], row["path"], 32, center_crop=crop) + 1) * 127.5
        ).round()
        buffer = io.BytesIO()
        Image.fromarray(pixels.permute(1, 2, 0).byte().numpy()).save(buffer, format="PNG")
        out.append(
            {"path": f"{prefix}/{row['path']}", "label": row["label"], "image": buffer.getvalue()}
        )
    return out


def write(rows: list[dict], name: str) -> None:
    pq.write_table(pa.Table.from_pylist(rows), OUT / name, compression="zstd")
    print(f"{name}: {len(rows)} images, {(OUT / name).stat().st_size / 1e3:.0f} kB")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    write(pick(DATA / "celeba" / "train.parquet", 120, "faces", 140, 0), "reference.parquet")
    incoming = (
        pick(DATA / "celeba" / "test.parquet", 60, "faces", 140, 1)
        + pick(DATA / "cifar10" / "test.parquet", 30, "cifar10", None, 2)
        + pick(DATA / "dtd" / "all.parquet", 30, "textures", None, 3)
    )
    write(incoming, "incoming.parquet")


if __name__ == "__main__":
    main()
