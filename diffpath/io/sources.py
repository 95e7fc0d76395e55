"""Image sources: a folder/prefix of image files or Parquet files with an image column, a
Parquet file, or one image file.

A source is listed once into `ImageRef`s, sorted by locator so shards are deterministic.
An image is located by (uri, row) — unique — and named for people by `path`, which may
repeat. Reading returns bytes per ref, with unreadable items recorded rather than raised;
a Parquet file is read only in the row groups that hold the rows asked for.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
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
    list_objects,
    protocol_prefix,
    read_each,
    write_parquet,
)

__all__ = [
    "ImageRef",
    "Listing",
    "check_source",
    "list_source",
    "list_table",
    "listing_id",
    "load_images",
    "read_listing",
    "read_refs",
    "refs_table",
    "store_listing",
    "subsample",
    "table_refs",
    "write_listing",
]

log = logging.getLogger(__name__)

Listed = TypeVar("Listed", pa.Table, list)  # a listing as Arrow rows, or as refs


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


def _parquet_block(fs, prefix: str, path: str) -> tuple[str, pa.Array, pa.Array]:
    """A Parquet file of images as (its uri, rows, image names); a `StorageError` naming a
    file that is not one."""
    try:
        schema = pq.read_schema(fs.open(path, "rb"))
        if "image" not in schema.names:
            raise StorageError(f"Parquet file {prefix}{path} has no 'image' column")
        keys = _read_keys(fs, path, schema)
    except pa.ArrowException as err:
        reason = str(err).splitlines()[0]
        raise StorageError(f"{prefix}{path} is not a readable Parquet file: {reason}") from err
    return prefix + path, pa.array(np.arange(len(keys)), pa.int64()), keys


def _read_keys(fs, path: str, schema: pa.Schema) -> pa.Array:
    """Image names of a Parquet file, as Arrow strings (no Python object per row): `path`,
    `image.path` (HF datasets), else `file#row`."""
    name = path.rsplit("/", 1)[-1]
    n = pq.read_metadata(fs.open(path, "rb")).num_rows
    keys = pa.nulls(n, pa.string())
    image_type = schema.field("image").type
    if "path" in schema.names:
        keys = pq.read_table(fs.open(path, "rb"), columns=["path"]).column("path")
    elif pa.types.is_struct(image_type) and image_type.get_field_index("path") >= 0:
        keys = pq.read_table(fs.open(path, "rb"), columns=["image.path"]).column(0)  # no bytes
    keys = pc.cast(
        keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys, pa.string()
    )
    if keys.null_count:
        numbered = pa.array([f"{name}#{i}" for i in range(n)], pa.string())
        keys = pc.if_else(pc.is_null(keys), numbered, keys)
    return keys


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


Block = tuple[str, pa.Array, pa.Array]  # a Parquet file's uri, rows and image names
Files = tuple[pa.Array, pa.Array]  # image files: their uris and names


def _list_one(uri: str) -> tuple[Files, list[Block], pa.Array]:
    """(the image files of one source, its Parquet files' blocks, the files it holds that
    are neither images nor Parquet), as Arrow strings."""
    fs, root = filesystem(uri)
    prefix = protocol_prefix(uri)
    none = pa.array([], pa.string())
    if check_source(uri):
        if root.lower().endswith(".parquet"):
            return (none, none), [_parquet_block(fs, prefix, root)], none
        return (pa.array([prefix + root]), pa.array([root.rsplit("/", 1)[-1]])), [], none
    paths = list_objects(uri)
    lower = pc.utf8_lower(paths)
    parquet = pc.ends_with(lower, ".parquet")
    image = functools.reduce(pc.or_, [pc.ends_with(lower, ext) for ext in IMAGE_EXTENSIONS])
    blocks, unreadable = [], []
    for path in paths.filter(parquet).to_pylist():
        try:
            blocks.append(_parquet_block(fs, prefix, path))
        except StorageError as err:  # reading it gives its error row
            log.warning("%s is not a Parquet file of images: %s", prefix + path, err)
            unreadable.append(path)
    files = pa.concat_arrays([paths.filter(image), pa.array(unreadable, pa.string())])
    names = pc.utf8_slice_codeunits(files, len(root.rstrip("/")) + 1)
    uris = pc.binary_join_element_wise(prefix, files, "") if prefix else files
    return (uris, names), blocks, paths.filter(pc.invert(pc.or_(parquet, image)))


def _once_each(uris: pa.Array, names: pa.Array) -> Files:
    """Image files sorted by uri, a file listed twice (or in two sources) kept once, with
    the name its first listing gave it."""
    order = pc.sort_indices(uris)  # stable: a file's first listing comes first
    uris, names = uris.take(order), names.take(order)
    first = np.ones(len(uris), bool)
    first[1:] = pc.not_equal(uris[1:], uris[:-1]).to_numpy(zero_copy_only=False)
    return uris.filter(pa.array(first)), names.filter(pa.array(first))


def list_table(uris: str | Sequence[str], allow_empty: bool = False) -> pa.Table:
    """Every image of one or more sources as Arrow columns (uri: dictionary-encoded, row,
    path), sorted by (uri, row): ~30 bytes an image plus its name, no Python object per
    image. A file listed twice (or inside two sources) is kept once; repeated `path` names
    are logged, never merged. Sources that hold no image are refused unless `allow_empty`
    (a night with no images).

    A URI ending in ``.parquet`` is a Parquet file, one with an image extension an image
    file; anything else is a folder/prefix searched recursively for image files
    (case-insensitive extensions) and Parquet files.
    """
    found: list[Files] = []
    blocks: dict[str, Block] = {}
    skipped: list[pa.Array] = []
    for uri in [uris] if isinstance(uris, str) else uris:
        try:
            files, parquet, unlisted = _list_one(uri)
        except StorageError:
            raise
        except OSError as err:  # access denied, no credentials, …: name the source
            raise StorageError(f"cannot list {uri!r}: {err}") from err
        found.append(files)
        blocks |= {block[0]: block for block in parquet if block[0] not in blocks}
        skipped.append(unlisted)
    _release_unused()  # what reading the Parquet files' names left behind
    if n_skipped := sum(len(unlisted) for unlisted in skipped):
        log.warning(
            "%d files of %s are neither images (%s) nor Parquet and were not listed, e.g. %s",
            n_skipped,
            uris,
            " ".join(IMAGE_EXTENSIONS),
            next(unlisted for unlisted in skipped if len(unlisted))[0].as_py(),
        )
    files, keys = _once_each(*(pa.concat_arrays(column) for column in zip(*found, strict=True)))
    listed = sorted(blocks)
    names = pa.concat_arrays([files, pa.array(listed, pa.string())])
    ranked = pc.sort_indices(names).to_numpy()
    position = np.empty(len(names), np.int32)
    position[ranked] = np.arange(len(names), dtype=np.int32)
    indices = [position[: len(files)]]
    indices += [
        np.full(len(blocks[u][1]), position[len(files) + j], np.int32) for j, u in enumerate(listed)
    ]
    rows = pa.concat_arrays([pa.nulls(len(files), pa.int64()), *(blocks[u][1] for u in listed)])
    paths = pa.concat_arrays([keys, *(blocks[u][2] for u in listed)])
    mixed = len(files) and listed  # files and Parquet blocks interleave by uri: to sort
    blocks.clear()  # the columns hold them now
    del files, keys, found
    index = np.concatenate(indices)
    uri = pa.DictionaryArray.from_arrays(pa.array(index), names.take(pa.array(ranked)))
    table = pa.table({"uri": uri, "row": rows, "path": paths})
    if mixed:  # only files, or only blocks: in (uri, row) order already
        table = table.take(pa.array(np.lexsort((rows.fill_null(-1).to_numpy(), index))))
    del rows, paths, index, uri
    _release_unused()
    if not len(table) and not allow_empty:
        raise StorageError(f"source {uris!r} holds no images")
    if repeated := _repeats(table["path"]):
        log.warning(
            "%d listed images share a path name with another image of %s; each is kept and "
            "scored on its own: join outputs on (uri, row), not on path",
            repeated,
            uris,
        )
    _release_unused()
    return table


def _repeats(names: pa.ChunkedArray) -> int:
    """How many names repeat an earlier one: the names' sort order (8 bytes a name), then
    neighbours compared 64k at a time (no sorted copy of the names)."""
    order = pc.sort_indices(names)
    return sum(
        pc.sum(pc.equal(run[1:], run[:-1])).as_py() or 0
        for run in (names.take(order[i : i + 65537]) for i in range(0, len(order), 65536))
    )


def _release_unused() -> None:
    """Give the pages Arrow's allocator keeps after frees back to the system: a listing's
    transient copies would otherwise stay resident (~5× the listing at 1M images)."""
    pa.default_memory_pool().release_unused()


def list_source(uris: str | Sequence[str], allow_empty: bool = False) -> list[ImageRef]:
    """`list_table` as refs: for the small listings a caller walks image by image."""
    return table_refs(list_table(uris, allow_empty))


def table_refs(table: pa.Table) -> list[ImageRef]:
    """The refs of a listing's rows (uri, row, path)."""
    return [ImageRef(**r) for r in table.select(["uri", "row", "path"]).to_pylist()]


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
            _parquet_block(fs, "", path)
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


def subsample(items: Listed, n: int | None, seed: int = 0) -> Listed:
    """A deterministic random subset of `n` refs or listing rows, kept in listing order
    (all if n is None)."""
    if n is None or n >= len(items):
        return items if isinstance(items, pa.Table) else list(items)
    chosen = np.sort(np.random.default_rng(seed).choice(len(items), size=n, replace=False))
    return items.take(chosen) if isinstance(items, pa.Table) else [items[i] for i in chosen]


def listing_id(rows: pa.Table) -> str:
    """Id (16 hex) of a listing's locators (`uri`, or `uri#row`), naming a run's files —
    never a cache key. Hashed in batches: no string per image is kept."""
    digest = hashlib.sha256()
    for batch in rows.select(["uri", "row"]).to_batches(max_chunksize=65536):
        uri = pc.cast(batch.column(0), pa.string())
        numbered = pc.binary_join_element_wise(uri, pc.cast(batch.column(1), pa.string()), "#")
        locators = pc.if_else(pc.is_null(batch.column(1)), uri, numbered)
        digest.update("".join(f"{loc}\n" for loc in locators.to_pylist()).encode())
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


def write_listing(rows: pa.Table, uri: str, shard_size: int | None = None) -> str:
    """Save a listing as Parquet (uri, row, path), one row group per shard of `shard_size`;
    names (mostly distinct) without a dictionary: 40% of the bytes, no hash table of them."""
    return write_parquet(rows, uri, row_group_size=shard_size, use_dictionary=["uri"])


def read_listing(uri: str, shard: int | None = None) -> list[ImageRef]:
    """The refs of a stored listing, or of one of its shards (one row group, read alone)."""
    fs, path = filesystem(uri)
    with fs.open(path, "rb") as handle:
        parquet = pq.ParquetFile(handle)
        table = parquet.read() if shard is None else parquet.read_row_group(shard)
    return table_refs(table)


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
    """List `sources`, optionally subsample, store the listing under `out/listings/`: in
    Arrow columns throughout, never a Python object per image."""
    rows = subsample(list_table(sources, allow_empty), max_images, seed)
    lid = listing_id(rows)
    uri = write_listing(rows, join(out, "listings", f"{lid}.parquet"), shard_size)
    n_images = len(rows)
    del rows
    _release_unused()
    return Listing(uri=uri, listing_id=lid, n_images=n_images, shard_size=shard_size)
