"""The shared image sets the benchmarks use: name → (Parquet path, center crop)."""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_sets(data_dir: Path = DATA_DIR) -> dict[str, tuple[Path, int | None]]:
    """CelebA train/test (full-size faces, cropped to 140 px first), CIFAR-10 test, DTD
    textures and Tiny ImageNet (32 px) under `data_dir` (the layout of ../shared/data)."""
    return {
        "celeba-train": (data_dir / "celeba" / "train.parquet", 140),
        "celeba-test": (data_dir / "celeba" / "test.parquet", 140),
        "cifar10": (data_dir / "cifar10" / "test.parquet", None),
        "dtd": (data_dir / "dtd" / "all.parquet", None),
        "tinyimagenet": (data_dir / "tinyimagenet32" / "val.parquet", None),
    }
