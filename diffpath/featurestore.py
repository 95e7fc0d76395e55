"""Feature shards on storage: deterministic sharding, Parquet with provenance metadata.

Layout: ``<root>/<config-hash>/<source-id>/shard-NNNNN.parquet``. Each file's schema
metadata carries the config (and its hash), the model id and package versions, and
`read_features` refuses to mix files whose hash differs from the one asked for.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Sequence
from importlib.metadata import version

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from diffpath.config import FeatureConfig
from diffpath.errors import ConfigMismatchError, StorageError
from diffpath.features import extract_features, feature_names
from diffpath.images import decode_images
from diffpath.model import DiffusionModel
from diffpath.sources import ImageRef, read_refs
from diffpath.storage import filesystem, join, write_bytes

__all__ = [
    "compute_shard",
    "feature_matrix",
    "read_features",
    "shard_uri",
    "source_id",
    "write_shard",
]

METADATA_KEY = b"diffpath"


def source_id(refs: Sequence[ImageRef]) -> str:
    """Content id of a listing (16 hex): same images in the same order → same id."""
    digest = hashlib.sha256()
    for ref in refs:
        digest.update(f"{ref.uri}\x00{ref.row}\x00{ref.key}\n".encode())
    return digest.hexdigest()[:16]


def shard_uri(root: str, config: FeatureConfig, source: str, index: int) -> str:
    return join(root, config.config_hash(), source, f"shard-{index:05d}.parquet")


def compute_shard(
    model: DiffusionModel,
    refs: Sequence[ImageRef],
    config: FeatureConfig,
    progress: Callable[[int], None] | None = None,
) -> pl.DataFrame:
    """Read, decode and featurise `refs`: one row per ref, `error` set where it failed."""
    items, errors = read_refs(refs)
    images, keys, decode_errors = decode_images(items, config.image_size, config.center_crop)
    errors |= decode_errors
    values = extract_features(model, images, keys, config, progress)
    names = feature_names(config.method)
    by_key = dict(zip(keys, values, strict=True))
    rows = [by_key.get(ref.key) for ref in refs]
    columns: dict[str, object] = {"path": [ref.key for ref in refs]}
    for j, name in enumerate(names):
        columns[name] = [None if row is None else float(row[j]) for row in rows]
    columns["error"] = [errors.get(ref.key) for ref in refs]
    schema = {"path": pl.String, **dict.fromkeys(names, pl.Float64), "error": pl.String}
    return pl.DataFrame(columns, schema=schema)


def write_shard(uri: str, frame: pl.DataFrame, config: FeatureConfig, model_id: str) -> str:
    """Write a feature shard with provenance in the Parquet schema metadata (atomically)."""
    meta = {
        "config_hash": config.config_hash(),
        "config": config.model_dump(mode="json"),
        "model_id": model_id,
        "versions": {name: version(name) for name in ("diffpath", "torch", "diffusers")},
    }
    table = frame.to_arrow()
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(meta).encode()})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return write_bytes(uri, buffer.getvalue())


def _provenance(schema: pa.Schema, uri: str) -> dict:
    metadata = schema.metadata or {}
    if METADATA_KEY not in metadata:
        raise StorageError(f"{uri} is not a diffpath feature shard")
    return json.loads(metadata[METADATA_KEY])


def shard_metadata(uri: str) -> dict:
    """The provenance dict stored in a feature shard (reads only the footer)."""
    fs, path = filesystem(uri)
    with fs.open(path, "rb") as handle:
        return _provenance(pq.read_schema(handle), uri)


def read_features(uris: Sequence[str], config_hash: str) -> tuple[pl.DataFrame, str]:
    """Concatenate feature shards → (frame, model id), refusing shards of another config
    hash or a mix of models."""
    if not uris:
        raise StorageError("no feature shards to read")
    frames, model_ids = [], set()
    for uri in uris:
        fs, path = filesystem(uri)
        with fs.open(path, "rb") as handle:
            table = pq.read_table(handle)
        meta = _provenance(table.schema, uri)
        if meta["config_hash"] != config_hash:
            raise ConfigMismatchError(
                f"{uri} holds features of config {meta['config_hash']}, expected {config_hash}"
            )
        model_ids.add(meta["model_id"])
        frames.append(pl.from_arrow(table))
    if len(model_ids) > 1:
        raise ConfigMismatchError(f"feature shards come from several models: {sorted(model_ids)}")
    return pl.concat(frames), model_ids.pop()


def feature_matrix(frame: pl.DataFrame, config: FeatureConfig) -> tuple[list[str], np.ndarray]:
    """(keys, features (n, d)) of the rows that have features (no error)."""
    ok = frame.filter(pl.col("error").is_null())
    return ok["path"].to_list(), ok.select(feature_names(config.method)).to_numpy()
