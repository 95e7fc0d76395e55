"""Tests of diffpath.benchmark; small specs of named images shared by them."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from diffpath.benchmark.spec import BenchmarkSpec


def parquet_of(path, names: list[str], contents: list[str] | None = None) -> str:
    """Images named `names` whose bytes are those of `contents` (default: the names)."""
    images = [f"pixels of {c}".encode() for c in contents or names]
    pq.write_table(pa.table({"path": names, "image": images}), path)
    return str(path)


def small_spec(tmp_path, **extra) -> BenchmarkSpec:
    """Set `a` (one file of 300 images) and set `b` (train 200, test 100 files)."""
    names = [f"img{i:04d}.png" for i in range(300)]
    parquet_of(tmp_path / "one.parquet", names)
    parquet_of(tmp_path / "train.parquet", names[:200])
    parquet_of(tmp_path / "test.parquet", names[200:])
    return BenchmarkSpec(
        data_root=str(tmp_path),
        datasets={
            "a": {"source": "one.parquet"},
            "b": {"train": "train.parquet", "test": "test.parquet"},
        },
        methods={"diffpath6d": {"config": {"method": "diffpath6d"}}, "v2": {}},
        **extra,
    )


def random_features(rng, shift: float, n: int = 120, d: int = 2) -> tuple[pa.Table, np.ndarray]:
    rows = pa.table({k: [str(i) for i in range(n)] for k in ("uri", "path", "sha256")})
    rows = rows.append_column("row", pa.array(range(n), pa.int64()))
    return rows, rng.normal(shift, 1.0, (n, d))
