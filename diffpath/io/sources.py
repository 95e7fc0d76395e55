"""Image sources: a folder/prefix of image files or Parquet files with an image column, a
Parquet file, or one image file.

A source is listed once into `ImageRef`s, sorted by locator so shards are deterministic.
An image is located by (uri, row) — unique — and named for people by `path`, which may
repeat. Reading returns bytes per ref, with unreadable items recorded rather than raised;
a Parquet file is read only in the row groups that hold the rows asked for.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from diffpath.errors import StorageError
from diffpath.io.identity import content_hash
from diffpath.io.images import IMAGE_EXTENSIONS, CropBox, decode_images
from diffpath.io.storage import (
    exists,
    filesystem,
    is_transient,
    join,
    protocol_prefix,
    read_each,
    write_parquet,
)

__all__ = [
    "ImageRef",
    "Listing",
    "check_source",
    "list_source",
    "listing_id",
    "load_images",
    "read_listing",
    "read_refs",
    "refs_table",
    "store_listing",
    "subsample",
    "write_listing",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ImageRef:
    """One listed image: file `uri` and `row` (Parquet; None for an image file) locate it
    uniquely; `path` (relative path or the Parquet `path` column) names it for people."""

    uri: str
    row: int | None
    path: str

    @property
    def locator(self) -> str:
        """`uri`, or `uri#row` for a Parquet row: unique within a listing."""
        return self.uri if self.row is None else f"{self.uri}#{self.row}"


def _parquet_refs(fs, prefix: str, path: str) -> list[ImageRef]:
    """The rows of a Parquet file of images; a `StorageError` naming a file that is not one."""
    try:
        schema = pq.read_schema(fs.open(path, "rb"))
        if "image" not in schema.names:
            raise StorageError(f"Parquet file {prefix}{path} has no 'image' column")
        keys = _read_keys(fs, path, schema)
    except pa.ArrowException as err:
        reason = str(err).splitlines()[0]
        raise StorageError(f"{prefix}{path} is not a readable Parquet file: {reason}") from err
    uri = prefix + path  # one string for all its rows: a listing holds millions
    return [ImageRef(uri=uri, row=i, path=k) for i, k in enumerate(keys)]


def _read_keys(fs, path: str, schema: pa.Schema) -> list[str]:
    """Image names of a Parquet file: `path`, `image.path` (HF datasets), else `file#row`."""
    name = path.rsplit("/", 1)[-1]
    keys: list[object] = [None] * pq.read_metadata(fs.open(path, "rb")).num_rows
    image_type = schema.field("image").type
    if "path" in schema.names:
        keys = pq.read_table(fs.open(path, "rb"), columns=["path"]).column("path").to_pylist()
    elif pa.types.is_struct(image_type) and image_type.get_field_index("path") >= 0:
        table = pq.read_table(fs.open(path, "rb"), columns=["image.path"])  # no bytes read
        keys = table.column(0).to_pylist()
    return [f"{name}#{i}" if k is None else str(k) for i, k in enumerate(keys)]


def check_source(uri: str) -> bool:
    """Whether a source is one file, a Parquet file or an image (else a folder or prefix);
    a `StorageError` saying what to do when it is neither, or storage cannot be reached."""
    if not exists(uri):
        raise StorageError(f"source {uri!r} does not exist: check the path or URI")
    fs, root = filesystem(uri)
    is_file = fs.isfile(root)
    if is_file and not root.lower().endswith((".parquet", *IMAGE_EXTENSIONS)):
        raise StorageError(
            f"source file {uri!r} is neither a Parquet file nor an image "
            f"({', '.join(IMAGE_EXTENSIONS)}): give its folder, or a Parquet file"
        )
    return is_file


def _list_one(uri: str) -> tuple[list[ImageRef], list[str]]:
    """(the images of one source, the files it holds that are neither images nor Parquet)."""
    refs: list[ImageRef] = []
    skipped: list[str] = []
    fs, root = filesystem(uri)
    prefix = protocol_prefix(uri)
    if check_source(uri):
        if root.lower().endswith(".parquet"):
            return _parquet_refs(fs, prefix, root), []
        return [ImageRef(uri=prefix + root, row=None, path=root.rsplit("/", 1)[-1])], []
    for path in sorted(fs.find(root)):
        lower, key = path.lower(), path[len(root.rstrip("/")) + 1 :]
        if lower.endswith(".parquet"):
            try:
                refs += _parquet_refs(fs, prefix, path)
            except StorageError as err:  # reading it gives its error row
                log.warning("%s is not a Parquet file of images: %s", prefix + path, err)
                refs.append(ImageRef(uri=prefix + path, row=None, path=key))
        elif lower.endswith(IMAGE_EXTENSIONS):
            refs.append(ImageRef(uri=prefix + path, row=None, path=key))
        else:
            skipped.append(prefix + path)
    return refs, skipped


def list_source(uris: str | Sequence[str], allow_empty: bool = False) -> list[ImageRef]:
    """List every image of one or more sources, sorted by (uri, row); a URI listed twice
    (or inside two sources) is kept once. Repeated `path` names are logged, never merged.
    Sources that hold no image are refused unless `allow_empty` (a night with no images).

    A URI ending in ``.parquet`` is a Parquet file; anything else is a folder/prefix
    searched recursively for image files (case-insensitive extensions) and Parquet files.
    """
    refs: list[ImageRef] = []
    skipped: list[str] = []
    for uri in [uris] if isinstance(uris, str) else uris:
        try:
            found, unlisted = _list_one(uri)
        except StorageError:
            raise
        except OSError as err:  # access denied, no credentials, …: name the source
            raise StorageError(f"cannot list {uri!r}: {err}") from err
        refs += found
        skipped += unlisted
    if skipped:
        log.warning(
            "%d files of %s are neither images (%s) nor Parquet and were not listed, e.g. %s",
            len(skipped),
            uris,
            " ".join(IMAGE_EXTENSIONS),
            skipped[0],
        )
    if not refs and not allow_empty:
        raise StorageError(f"source {uris!r} holds no images")
    unique = {ref.locator: ref for ref in refs}.values()
    repeated = sum(n - 1 for n in Counter(ref.path for ref in unique).values() if n > 1)
    if repeated:
        log.warning(
            "%d listed images share a path name with another image of %s; each is kept and "
            "scored on its own: join outputs on (uri, row), not on path",
            repeated,
            uris,
        )
    return sorted(unique, key=lambda r: (r.uri, -1 if r.row is None else r.row))


DEFAULT_MAX_IMAGE_BYTES = 256 * 2**20


def max_image_bytes() -> int:
    """The most bytes read for one image (env DIFFPATH_MAX_IMAGE_BYTES, default 256 MiB):
    a larger one is an error row, never a whole file in memory."""
    return int(os.environ.get("DIFFPATH_MAX_IMAGE_BYTES", DEFAULT_MAX_IMAGE_BYTES))


def _too_large(limit: int) -> str:
    return f"over the {limit:,}-byte limit per image (raise DIFFPATH_MAX_IMAGE_BYTES to read it)"


def _read_file(fs, path: str, uri: str, limit: int) -> bytes | str:
    """An image file's bytes, reading at most `limit` + 1; a Parquet file listed as one
    item (it could not be listed) gives the reason it cannot be read."""
    if path.lower().endswith(".parquet"):
        try:
            _parquet_refs(fs, "", path)
            return f"{uri}: Parquet file changed since it was listed; rerun"
        except StorageError as err:
            return f"{err}: fix it or move it out of the source"
    with fs.open(path, "rb") as handle:
        data = handle.read(limit + 1)
    return f"{uri}: {_too_large(limit)}" if len(data) > limit else data


def _read_files(uris: Sequence[str], limit: int) -> dict[str, bytes | str]:
    """Image files read concurrently, at most `limit` + 1 bytes each (`read_each`); a file
    that fails here is left out, for `_read_file` to read again and say why."""
    found = read_each(uris, limit + 1)
    return {
        uri: f"{uri}: {_too_large(limit)}" if len(data) > limit else data
        for uri, data in found.items()
        if isinstance(data, bytes)
    }


def _image_bytes(value: object, limit: int) -> bytes:
    if isinstance(value, dict):
        value = value.get("bytes")
    if not isinstance(value, bytes | bytearray):
        raise TypeError(f"image cell holds {type(value).__name__}, not bytes")
    if len(value) > limit:
        raise ValueError(_too_large(limit))
    return bytes(value)


def _read_rows(fs, path: str, rows: list[int]) -> dict[int, object]:
    """{row: image cell} of a Parquet file, reading only the row groups that hold `rows`."""
    parquet = pq.ParquetFile(fs.open(path, "rb"))
    sizes = [parquet.metadata.row_group(g).num_rows for g in range(parquet.num_row_groups)]
    starts = np.cumsum([0, *sizes])
    groups = sorted({int(np.searchsorted(starts, row, side="right")) - 1 for row in rows})
    cells: dict[int, object] = {}
    for group in groups:
        column = parquet.read_row_group(group, columns=["image"]).column("image").to_pylist()
        first = int(starts[group])
        cells |= {row: column[row - first] for row in rows if first <= row < first + len(column)}
    return cells


def read_refs(refs: Sequence[ImageRef]) -> list[bytes | str]:
    """The bytes of each ref, in order, or a one-line error for one that cannot be read.
    A transient failure (`is_transient`: a timeout, a dropped connection) raises a
    `StorageError` instead, so the caller retries rather than record a readable image as
    unreadable."""
    results: dict[int, bytes | str] = {}
    by_file: dict[str, list[int]] = defaultdict(list)
    for i, ref in enumerate(refs):
        by_file[ref.uri].append(i)
    limit = max_image_bytes()
    files = [
        uri
        for uri, members in by_file.items()
        if refs[members[0]].row is None and not uri.lower().endswith(".parquet")
    ]
    prefetched = _read_files(files, limit)
    for uri, members in by_file.items():
        if uri in prefetched:
            results |= dict.fromkeys(members, prefetched[uri])
            continue
        fs, path = filesystem(uri)
        try:
            if refs[members[0]].row is None:
                results |= dict.fromkeys(members, _read_file(fs, path, uri, limit))
                continue
            cells = _read_rows(fs, path, sorted({refs[i].row for i in members}))
            for i in members:
                try:
                    results[i] = _image_bytes(cells.get(refs[i].row), limit)
                except (TypeError, ValueError) as err:
                    results[i] = f"{uri} row {refs[i].row}: {err}"
        except (OSError, pa.ArrowException) as err:
            reason = f"cannot read {uri}: {err}".splitlines()[0]
            if is_transient(err):  # not the image's fault: the shard is retried whole
                raise StorageError(f"{reason} (transient; retried)") from err
            results |= dict.fromkeys(members, reason)
    return [results[i] for i in range(len(refs))]


def load_images(
    refs: Sequence[ImageRef],
    size: int = 32,
    crop: str | CropBox | None = None,
    center_crop: int | None = None,
    via: int | None = None,
) -> tuple[torch.Tensor, list[str], dict[str, str]]:
    """Read and decode refs → (images (N, 3, size, size), their content hashes,
    {locator: error} of those that failed)."""
    contents = read_refs(refs)
    errors = {r.locator: c for r, c in zip(refs, contents, strict=True) if isinstance(c, str)}
    readable = [(r.locator, c) for r, c in zip(refs, contents, strict=True) if isinstance(c, bytes)]
    images, decoded, decode_errors = decode_images(readable, size, crop, center_crop, via)
    errors |= {readable[i][0]: message for i, message in decode_errors.items()}
    return images, [content_hash(readable[i][1]) for i in decoded], errors


def subsample(refs: Sequence[ImageRef], n: int | None, seed: int = 0) -> list[ImageRef]:
    """A deterministic random subset of `n` refs, kept in listing order (all if n is None)."""
    if n is None or n >= len(refs):
        return list(refs)
    chosen = np.sort(np.random.default_rng(seed).choice(len(refs), size=n, replace=False))
    return [refs[i] for i in chosen]


def listing_id(refs: Sequence[ImageRef]) -> str:
    """Id (16 hex) of a listing's locators, naming a run's files — never a cache key."""
    digest = hashlib.sha256()
    for ref in refs:
        digest.update(f"{ref.locator}\n".encode())
    return digest.hexdigest()[:16]


def refs_table(refs: Sequence[ImageRef]) -> pa.Table:
    """Refs as a table (uri, row, path): a listing's rows."""
    return pa.table(
        {
            "uri": pa.array([r.uri for r in refs], pa.string()),
            "row": pa.array([r.row for r in refs], pa.int64()),
            "path": pa.array([r.path for r in refs], pa.string()),
        }
    )


def write_listing(refs: Sequence[ImageRef], uri: str, shard_size: int | None = None) -> str:
    """Save a listing as Parquet (uri, row, path), one row group per shard of `shard_size`."""
    return write_parquet(refs_table(refs), uri, row_group_size=shard_size)


def read_listing(uri: str, shard: int | None = None) -> list[ImageRef]:
    """The refs of a stored listing, or of one of its shards (one row group, read alone)."""
    fs, path = filesystem(uri)
    with fs.open(path, "rb") as handle:
        parquet = pq.ParquetFile(handle)
        table = parquet.read() if shard is None else parquet.read_row_group(shard)
    return [ImageRef(**r) for r in table.to_pylist()]


@dataclass(frozen=True)
class Listing:
    """A stored listing: where it is, its id, and how it splits into shards."""

    uri: str
    listing_id: str
    n_images: int
    shard_size: int

    @property
    def n_shards(self) -> int:
        return -(-self.n_images // self.shard_size)


def store_listing(
    sources: Sequence[str],
    out: str,
    shard_size: int,
    max_images: int | None,
    seed: int,
    allow_empty: bool = False,
) -> Listing:
    """List `sources`, optionally subsample, store the listing under `out/listings/`."""
    refs = subsample(list_source(sources, allow_empty), max_images, seed)
    lid = listing_id(refs)
    uri = write_listing(refs, join(out, "listings", f"{lid}.parquet"), shard_size)
    return Listing(uri=uri, listing_id=lid, n_images=len(refs), shard_size=shard_size)
