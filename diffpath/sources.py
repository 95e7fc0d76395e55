"""Image sources: a folder/prefix of image files or Parquet files with an image column.

A source is listed once into `ImageRef`s (sorted, so shards are deterministic); reading
returns bytes per key, with unreadable items recorded rather than raised.
"""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from diffpath.errors import StorageError
from diffpath.images import IMAGE_EXTENSIONS
from diffpath.storage import filesystem, write_bytes

__all__ = ["ImageRef", "list_source", "read_listing", "read_refs", "subsample", "write_listing"]


@dataclass(frozen=True, order=True)
class ImageRef:
    """One image of a source: its key (relative path or Parquet `path`), file URI, row."""

    key: str
    uri: str
    row: int | None = None


def _protocol_prefix(uri: str) -> str:
    return uri.split("://", 1)[0] + "://" if "://" in uri else ""


def _parquet_refs(fs, prefix: str, path: str) -> list[ImageRef]:
    schema = pq.read_schema(fs.open(path, "rb"))
    if "image" not in schema.names:
        raise StorageError(f"Parquet file {prefix}{path} has no 'image' column")
    keys = _read_keys(fs, path, schema)
    return [ImageRef(key=k, uri=prefix + path, row=i) for i, k in enumerate(keys)]


def _read_keys(fs, path: str, schema: pa.Schema) -> list[str]:
    """Image keys of a Parquet file: `path`, `image.path` (HF datasets) or the row number."""
    if "path" in schema.names:
        column = pq.read_table(fs.open(path, "rb"), columns=["path"]).column("path")
        return [str(k) for k in column.to_pylist()]
    image_type = schema.field("image").type
    if pa.types.is_struct(image_type) and image_type.get_field_index("path") >= 0:
        column = pq.read_table(fs.open(path, "rb"), columns=["image"]).column("image")
        paths = column.combine_chunks().field("path").to_pylist()
        if all(paths):
            return [str(k) for k in paths]
    rows = pq.read_metadata(fs.open(path, "rb")).num_rows
    name = path.rsplit("/", 1)[-1]
    return [f"{name}#{i}" for i in range(rows)]


def list_source(uris: str | Sequence[str]) -> list[ImageRef]:
    """List every image of one or more sources, sorted by (uri, row, key).

    A URI ending in ``.parquet`` is a Parquet file; anything else is a folder/prefix
    searched recursively for image files (case-insensitive extensions) and Parquet files.
    """
    refs: list[ImageRef] = []
    for uri in [uris] if isinstance(uris, str) else uris:
        fs, root = filesystem(uri)
        prefix = _protocol_prefix(uri)
        if not fs.exists(root):
            raise StorageError(f"source {uri!r} does not exist")
        if fs.isfile(root):
            if not root.lower().endswith(".parquet"):
                raise StorageError(f"source file {uri!r} is not a .parquet file")
            refs += _parquet_refs(fs, prefix, root)
            continue
        for path in sorted(fs.find(root)):
            lower = path.lower()
            if lower.endswith(".parquet"):
                refs += _parquet_refs(fs, prefix, path)
            elif lower.endswith(IMAGE_EXTENSIONS):
                key = path[len(root.rstrip("/")) + 1 :]
                refs.append(ImageRef(key=key, uri=prefix + path))
    if not refs:
        raise StorageError(f"source {uris!r} holds no images")
    return sorted(refs, key=lambda r: (r.uri, r.row if r.row is not None else -1, r.key))


def _image_bytes(value: object) -> bytes:
    if isinstance(value, dict):
        value = value.get("bytes")
    if not isinstance(value, bytes | bytearray):
        raise TypeError(f"image cell holds {type(value).__name__}, not bytes")
    return bytes(value)


def read_refs(refs: Sequence[ImageRef]) -> tuple[list[tuple[str, bytes]], dict[str, str]]:
    """Read the bytes of `refs` in order: ([(key, bytes)], {key: error}) — never raises per item."""
    found: dict[ImageRef, bytes] = {}
    errors: dict[str, str] = {}
    by_file: dict[str, list[ImageRef]] = defaultdict(list)
    for ref in refs:
        by_file[ref.uri].append(ref)
    for uri, group in by_file.items():
        fs, path = filesystem(uri)
        try:
            if group[0].row is None:
                found[group[0]] = fs.cat_file(path)
                continue
            rows = sorted({r.row for r in group})
            table = pq.read_table(fs.open(path, "rb"), columns=["image"]).take(rows)
            cells = dict(zip(rows, table.column("image").to_pylist(), strict=True))
            for ref in group:
                try:
                    found[ref] = _image_bytes(cells[ref.row])
                except TypeError as err:
                    errors[ref.key] = f"{uri} row {ref.row}: {err}"
        except (OSError, pa.ArrowException) as err:
            for ref in group:
                errors[ref.key] = f"cannot read {uri}: {err}"
    return [(r.key, found[r]) for r in refs if r in found], errors


def subsample(refs: Sequence[ImageRef], n: int | None, seed: int = 0) -> list[ImageRef]:
    """A deterministic random subset of `n` refs, kept in listing order (all if n is None)."""
    if n is None or n >= len(refs):
        return list(refs)
    chosen = np.sort(np.random.default_rng(seed).choice(len(refs), size=n, replace=False))
    return [refs[i] for i in chosen]


def write_listing(refs: Sequence[ImageRef], uri: str) -> str:
    """Save a listing as Parquet (key, uri, row) so shard tasks can read their slice."""
    table = pa.table(
        {
            "key": [r.key for r in refs],
            "uri": [r.uri for r in refs],
            "row": pa.array([r.row for r in refs], pa.int64()),
        }
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return write_bytes(uri, buffer.getvalue())


def read_listing(uri: str) -> list[ImageRef]:
    fs, path = filesystem(uri)
    with fs.open(path, "rb") as handle:
        rows = pq.read_table(handle).to_pylist()
    return [ImageRef(key=r["key"], uri=r["uri"], row=r["row"]) for r in rows]
