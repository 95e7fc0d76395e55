"""A run's feature shards: which listed image got which features, joined by locator.

A shard task reads its slice of the listing, hashes each image's bytes, takes what it can
from the content-addressed `FeatureCache`, computes the rest (each distinct content once,
however many names it has), stores those in the cache and writes the shard: one row per
listed image — ``uri, row, path, sha256, <features…>, phash, error`` (``phash``: its
perceptual hash, for near copies) — to
``<out>/shards/<listing-id>-<config-hash>/shard-NNNNN.parquet`` (one folder per listing
and config: two configs over one listing never overwrite each other), with the feature
key, config and model fingerprint in the Parquet metadata. A shard is always rebuilt from
the bytes, never trusted by name; only features are reused, and only by content.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib.metadata import version

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from diffpath.config import FeatureConfig
from diffpath.errors import ConfigMismatchError, StorageError
from diffpath.features.cache import FeatureCache, Lookup
from diffpath.features.extract import extract_features, feature_names
from diffpath.io.identity import content_hash, feature_key
from diffpath.io.images import decode_batches
from diffpath.io.phash import perceptual_hashes
from diffpath.io.sources import ImageRef, Listing, read_listing, read_refs
from diffpath.io.storage import join, read_parquet, write_parquet
from diffpath.model.diffusion import DiffusionModel

__all__ = [
    "LOCATOR",
    "ShardCounts",
    "compute_shard",
    "feature_matrix",
    "featurize_shard",
    "read_shards",
    "shard_hint",
    "shard_uri",
    "write_shard",
]

LOCATOR = ["uri", "row", "path", "sha256"]  # the columns every per-image output starts with


@dataclass(frozen=True)
class ShardCounts:
    """What a shard task did: images listed, features computed / taken from the cache,
    failures, and its wall time."""

    uri: str
    n_images: int
    n_computed: int
    n_cached: int
    n_errors: int
    seconds: float = 0.0


def shard_uri(out: str, listing_id: str, index: int, config: FeatureConfig) -> str:
    return join(out, "shards", f"{listing_id}-{config.config_hash()}", f"shard-{index:05d}.parquet")


FLUSH_SECONDS = 60.0  # a shard stores its new features at least this often: what a retry loses


def shard_hint(refs: Sequence[ImageRef]) -> str:
    """Where a shard's cache segments go: a hash of its locators, the same on a retry (a
    place to look, never a key: features are found by content)."""
    locators = "\n".join(f"{r.uri}\t{r.row}" for r in refs)
    return hashlib.sha256(locators.encode()).hexdigest()[:32]


@dataclass
class _Part:
    """One part of a shard's features (a combination's method, or the method itself): what
    the cache held, what this shard computed, and what is computed but not yet stored."""

    cache: FeatureCache
    config: FeatureConfig
    found: Lookup
    computed: dict[str, np.ndarray] = field(default_factory=dict)
    unsaved: dict[str, np.ndarray] = field(default_factory=dict)

    def has(self, sha256: str) -> bool:
        return sha256 in self.found.features or sha256 in self.computed

    def add(self, fresh: dict[str, np.ndarray]) -> None:
        self.computed |= fresh
        self.unsaved |= fresh

    def save(self, hint: str, regroup: bool = False) -> None:
        """Store the unsaved features as one segment; with `regroup`, the found ones too
        when they were scattered over many segments, so the next lookup reads one."""
        found = self.found.features if regroup and self.found.scattered else {}
        self.cache.put({**found, **self.unsaved}, hint)
        self.unsaved = {}

    def value(self, sha256: str) -> np.ndarray:
        return self.found.features.get(sha256, self.computed.get(sha256))


def compute_shard(
    model: DiffusionModel,
    refs: Sequence[ImageRef],
    config: FeatureConfig,
    cache_root: str,
    progress: Callable[[int], None] | None = None,
    contents: Sequence[bytes | str] | None = None,
) -> tuple[pa.Table, int, int]:
    """Features of `refs`, one row each in order (`error` set where it failed) → (frame,
    distinct contents computed, rows found in the cache).

    A combination's parts are cached apart, as their own methods' features: a part seen
    before (e.g. by a `diffpath6d` run) is read, only the missing parts are computed. New
    features go to the cache every `FLUSH_SECONDS` and at the end, one segment per part; a
    part whose cached features were scattered over many segments stores them all again,
    together, so the next lookup reads one. `contents`: the refs' bytes when already read."""
    contents = read_refs(refs) if contents is None else contents
    hashes = [content_hash(c) if isinstance(c, bytes) else None for c in contents]
    errors = {i: c for i, c in enumerate(contents) if isinstance(c, str)}
    phashes = _phashes(contents)
    readable, hint = [h for h in hashes if h is not None], shard_hint(refs)
    parts = []
    for part in config.parts():
        cache = FeatureCache(cache_root, part, model.model_id)
        parts.append(_Part(cache, part, cache.get(readable, hint)))
    lacking = set().union(*(p.found.missing for p in parts))
    todo = {}  # one decode per distinct content some part lacks: {hash: (name, bytes)}
    for ref, h, c in zip(refs, hashes, contents, strict=True):
        if h in lacking and h not in todo:
            todo[h] = (ref.locator, c)
    if progress:
        progress(len(refs) - len(todo))
    todo_hashes, failed, flushed = list(todo), {}, time.monotonic()
    batches = decode_batches(list(todo.values()), model.batch_sizes[0], **config.geometry)
    for images, decoded, decode_errors in batches:  # decoding runs ahead on threads
        ids = [todo_hashes[i] for i in decoded]
        for part in parts:
            missing = [j for j, h in enumerate(ids) if not part.has(h)]
            if missing:
                values = extract_features(
                    model, images[missing], [ids[j] for j in missing], part.config
                )
                part.add(dict(zip([ids[j] for j in missing], values, strict=True)))
        if time.monotonic() - flushed >= FLUSH_SECONDS:
            for part in parts:
                part.save(hint)
            flushed = time.monotonic()
        if progress:
            progress(len(ids))
        failed |= {todo_hashes[i]: message for i, message in decode_errors.items()}
    for part in parts:
        part.save(hint, regroup=True)
    if progress and failed:
        progress(len(failed))
    errors |= {i: failed[h] for i, h in enumerate(hashes) if h in failed}
    names = feature_names(config.method)
    matrix = np.full((len(refs), len(names)), np.nan)
    for i, h in enumerate(hashes):
        if i not in errors:
            matrix[i] = np.concatenate([part.value(h) for part in parts])
    n_cached = sum(h is not None and h not in lacking for h in hashes)
    n_computed = len(set().union(*(p.computed for p in parts)))
    return _frame(refs, hashes, names, matrix, phashes, errors), n_computed, n_cached


def _phashes(contents: Sequence[bytes | str]) -> pa.Array:
    """Each content's perceptual hash; null where it was not read or does not decode."""
    readable = [i for i, c in enumerate(contents) if isinstance(c, bytes)]
    values, decoded = perceptual_hashes([contents[i] for i in readable])
    mask = np.ones(len(contents), dtype=bool)
    mask[readable] = ~decoded
    hashes = np.zeros(len(contents), dtype=np.uint64)
    hashes[readable] = values
    return pa.array(hashes, pa.uint64(), mask=mask)


def _frame(
    refs: Sequence[ImageRef],
    hashes: Sequence[str | None],
    names: Sequence[str],
    matrix: np.ndarray,
    phashes: pa.Array,
    errors: dict[int, str],
) -> pa.Table:
    """A shard's table: each ref's locator, content hash, features, perceptual hash, error."""
    columns = {
        "uri": pa.array([r.uri for r in refs], pa.string()),
        "row": pa.array([r.row for r in refs], pa.int64()),
        "path": pa.array([r.path for r in refs], pa.string()),
        "sha256": pa.array(hashes, pa.string()),
        **{
            n: pa.array(v, pa.float64(), mask=np.isnan(v))
            for n, v in zip(names, matrix.T, strict=True)
        },
        "phash": phashes,
        "error": pa.array([errors.get(i) for i in range(len(refs))], pa.string()),
    }
    return pa.table(columns)


def empty_frame(config: FeatureConfig) -> pa.Table:
    """The table of a run that listed no image: its columns, no rows."""
    names = feature_names(config.method)
    return _frame([], [], names, np.empty((0, len(names))), pa.array([], pa.uint64()), {})


class _Prefetch:
    """The next shard's bytes, read on a thread while this shard is on the model: one slot
    per process, taken by the shard it was read for (a failed read is read again there)."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="prefetch")
        self._slot: tuple[tuple[str, int], Future] | None = None
        self._lock = threading.Lock()

    def start(self, listing: Listing, index: int) -> None:
        if index >= listing.n_shards:
            return
        future = self._pool.submit(lambda: read_refs(read_listing(listing.uri, index)))
        with self._lock:
            self._slot = ((listing.uri, index), future)

    def take(self, listing: Listing, index: int) -> list[bytes | str] | None:
        with self._lock:
            slot, self._slot = self._slot, None
        if slot is None or slot[0] != (listing.uri, index):
            return None
        try:
            return slot[1].result()
        except StorageError:  # a transient failure of the early read: this shard reads again
            return None


_PREFETCH = _Prefetch()


def featurize_shard(
    model: DiffusionModel,
    listing: Listing,
    index: int,
    config: FeatureConfig,
    cache_root: str,
    out: str,
    progress: Callable[[int], None] | None = None,
    prefetch: bool = False,
) -> ShardCounts:
    """Shard `index` of a stored listing → its Parquet under `out`, features cached by
    content. With `prefetch` the next shard's bytes are read while this one is on the
    model (for shards run one after another in one process: the threads runner, plain
    calls); wall time then approaches max(read, compute), not their sum."""
    started = time.perf_counter()
    refs = read_listing(listing.uri, index)
    contents = _PREFETCH.take(listing, index) or read_refs(refs)
    if prefetch:
        _PREFETCH.start(listing, index + 1)
    frame, n_computed, n_cached = compute_shard(model, refs, config, cache_root, progress, contents)
    uri = write_shard(
        shard_uri(out, listing.listing_id, index, config), frame, config, model.model_id
    )
    n_errors = len(frame) - frame["error"].null_count
    seconds = time.perf_counter() - started
    return ShardCounts(uri, len(refs), n_computed, n_cached, n_errors, seconds)


def write_shard(uri: str, frame: pa.Table, config: FeatureConfig, model_id: str) -> str:
    """Write a shard atomically, its provenance (feature key, config, model) and identity
    (its listing's folder and shard name, its row count) in the metadata."""
    meta = {
        "name": _shard_name(uri),
        "rows": len(frame),
        "feature_key": feature_key(config, model_id),
        "config": config.model_dump(mode="json"),
        "model_id": model_id,
        "versions": {name: version(name) for name in ("diffpath", "torch", "diffusers")},
    }
    return write_parquet(frame, uri, meta)


def _shard_name(uri: str) -> str:
    """`<listing-id>-<config-hash>/shard-NNNNN.parquet`: which listing and shard it holds."""
    return "/".join(uri.rsplit("/", 2)[-2:])


def read_shards(uris: Sequence[str], config: FeatureConfig) -> tuple[pa.Table, str]:
    """A run's shards concatenated → (frame, model fingerprint); refuses shards of another
    config hash, a mix of models, and a shard written for another listing or cut short."""
    if not uris:
        raise StorageError("no feature shards to read")
    frames, model_ids = [], set()
    for uri in uris:
        table = read_parquet(uri)
        metadata = (table.schema.metadata or {}).get(b"diffpath")
        if metadata is None:
            raise StorageError(f"{uri} is not a diffpath feature shard")
        meta = json.loads(metadata)
        if meta.get("name", _shard_name(uri)) != _shard_name(uri) or meta.get(
            "rows", len(table)
        ) != len(table):
            raise StorageError(
                f"{uri} holds shard {meta.get('name')} of {meta.get('rows')} rows, not this "
                "listing's: it was copied or replaced; delete it and rerun"
            )
        if meta["feature_key"] != feature_key(config, meta["model_id"]):
            raise ConfigMismatchError(
                f"{uri} holds features of key {meta['feature_key']}, not of config "
                f"{config.config_hash()}"
            )
        model_ids.add(meta["model_id"])
        frames.append(table.replace_schema_metadata(None))
    if len(model_ids) > 1:
        raise ConfigMismatchError(f"feature shards come from several models: {sorted(model_ids)}")
    return pa.concat_tables(frames), model_ids.pop()


def feature_matrix(frame: pa.Table, config: FeatureConfig) -> tuple[pa.Table, np.ndarray]:
    """(the rows that have features, their features (n, D))."""
    ok = frame.filter(pc.is_null(frame["error"]))
    names = feature_names(config.method)
    return ok, np.column_stack([ok[n].to_numpy() for n in names]).reshape(len(ok), len(names))
