"""Content-addressed feature cache: features stored and found by (feature key, content
hash), in requests that grow with shards, not with images.

Layout under a root URI (any fsspec store: a local folder, s3://bucket/prefix, …)::

    <root>/<feature-key>/key.json                       config, model fingerprint, names
    <root>/<feature-key>/segments/<hint>/<t>-<id>.parquet  rows: sha256, features+checksum
    <root>/<feature-key>/index/<generation>.parquet     hash prefix → segment, compacted

The feature key is ``<config hash>-<model fingerprint>`` and a row's ``sha256`` the hash of
the image bytes (both from `diffpath.io.identity`), so a rerun, a renamed file, a file under
another prefix or tonight's dump sharing most images with last night's finds every feature
it has seen; a rewritten file has a new hash and is computed afresh.

- **Writes**: a shard stores what it computed as one immutable segment per flush (one PUT
  for up to a shard's worth of images), under its `hint` (a hash of the shard's locators).
  A row's value is a function of its key, so two writers never disagree; nothing is
  rewritten in place.
- **Lookups**: a process loads the newest index generation once (one listing per lookup
  checks for a newer one) and reads only the segments that hold the wanted hashes, one
  GET each, plus the segments under the shard's own hint (one listing), so a retried
  shard finds what it stored before it failed. The hint is a place to look, never a key.
  Tonight's shard holds mostly what a shard held last night, so it touches few segments;
  one that touches more than `MAX_TOUCHED` stores all its features in its own segment, so
  the next night's touches one (`Lookup.scattered`).
- **Compaction** (`compact_caches`, run by the flows before their shards) folds the
  segments written since the newest generation into the next one (created exclusively:
  of two compactions at once one wins, the other's segments wait for the next), the
  newest copy of a hash winning, and deletes segments that were already superseded.
- **Every row is verified on read**: its checksum binds the feature key, the image's
  content hash and the values, so a torn or flipped row, another image's row or a
  non-finite value is a warning naming the image, and the feature is recomputed and
  stored anew. An unreadable segment or index is a warning too, never an answer.
  (A checksum detects accidents, not tampering.)

Per-image objects of diffpath 0.1 caches (``<key>/<h0h1>/<h2h3>/<hash>``) are not read:
their features are recomputed once; delete those folders to free the space.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from diffpath.config import FeatureConfig
from diffpath.errors import StorageError
from diffpath.features.extract import feature_names
from diffpath.io.identity import feature_key
from diffpath.io.storage import (
    create_exclusive,
    exists,
    find,
    is_transient,
    join,
    listdir,
    numbered,
    parquet_bytes,
    read_each,
    remove,
    write_json,
    write_many,
)

__all__ = ["MAX_TOUCHED", "Compaction", "FeatureCache", "Lookup", "compact_caches"]

log = logging.getLogger(__name__)

DTYPE = np.dtype("<f4")
CHECKSUM_BYTES = 16
MAX_TOUCHED = 4  # segments one lookup may read before its shard gathers them into one
LAYOUT = "segments"


def _prefix(hashes: Sequence[str]) -> np.ndarray:
    """The first 8 bytes of each sha256 as uint64: the index's key (a collision costs a
    recomputation, never a wrong value: rows are matched by the full hash)."""
    return np.array([int(h[:16], 16) for h in hashes], dtype=np.uint64)


def _examples(hashes: Sequence[str]) -> str:
    return ", ".join(hashes[:3]) + (" …" if len(hashes) > 3 else "")


@dataclass
class _Index:
    """A process's copy of one cache's newest generation: sorted hash prefixes, the
    segment each points to, the segment names, and every segment the generation covers."""

    generation: int | None = None
    prefixes: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint64))
    segments: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint32))
    names: list[str] = field(default_factory=list)
    covered: set[str] = field(default_factory=set)

    def segments_of(self, hashes: Sequence[str]) -> set[str]:
        """The names of the segments that hold `hashes`, as far as this generation knows."""
        if not len(self.prefixes) or not hashes:
            return set()
        wanted = _prefix(hashes)
        at = np.minimum(np.searchsorted(self.prefixes, wanted), len(self.prefixes) - 1)
        hit = self.prefixes[at] == wanted
        return {self.names[s] for s in np.unique(self.segments[at[hit]])}


_LOADED: dict[str, _Index] = {}  # {cache URI: its newest generation}, per process
_DESCRIBED: set[str] = set()  # key.json files this process has seen or written
_LOADING = threading.Lock()


@dataclass(frozen=True)
class Lookup:
    """What a lookup found ({hash: features (D,)}), the hashes it did not find (in the
    order asked), and how many segments it read."""

    features: Mapping[str, np.ndarray]
    missing: tuple[str, ...]
    segments: int

    @property
    def scattered(self) -> bool:
        """Its features sit in more than `MAX_TOUCHED` segments: worth storing together."""
        return self.segments > MAX_TOUCHED


@dataclass(frozen=True)
class Compaction:
    """What one compaction did to a cache: the generation written (None: nothing new, or
    another compaction won), segments folded in and segments deleted."""

    uri: str
    generation: int | None
    folded: int
    deleted: int


class FeatureCache:
    """Features of one (config, model) under `root`, looked up by image content hash."""

    def __init__(self, root: str, config: FeatureConfig, model_id: str) -> None:
        self.config = config
        self.model_id = model_id
        self.key = feature_key(config, model_id)
        self.uri = join(root, self.key)
        self.dim = len(feature_names(config.method))

    def _checksum(self, sha256: str, values: bytes) -> bytes:
        return hashlib.sha256(f"{self.key}/{sha256}/".encode() + values).digest()[:CHECKSUM_BYTES]

    def _verified(self, sha256: str, data: bytes) -> np.ndarray | None:
        """A row's features if its size, checksum and values hold; else None."""
        values, checksum = data[:-CHECKSUM_BYTES], data[-CHECKSUM_BYTES:]
        if len(values) != self.dim * DTYPE.itemsize or checksum != self._checksum(sha256, values):
            return None
        features = np.frombuffer(values, DTYPE).copy()
        return features if np.isfinite(features).all() else None

    def _segment_uri(self, name: str) -> str:
        return join(self.uri, "segments", name)

    def _index(self) -> _Index:
        """This process's copy of the newest generation, reloaded when a newer one exists."""
        with _LOADING:
            loaded = _LOADED.get(self.uri)
            newest = _newest(join(self.uri, "index"), loaded)
            _LOADED[self.uri] = newest
        return newest

    def get(self, hashes: Sequence[str], hint: str | None = None) -> Lookup:
        """The features of `hashes` that the cache holds and that verify; a damaged row is
        logged with its image's hash and left out (so it is recomputed)."""
        wanted = list(dict.fromkeys(hashes))
        if not wanted:
            return Lookup({}, (), 0)
        names = self._index().segments_of(wanted)
        if hint is not None:
            names |= {join(hint, name) for name in find(self._segment_uri(hint))}
        found: dict[str, np.ndarray] = {}
        damaged: set[str] = set()
        want = set(wanted)
        for uri, data in read_each([self._segment_uri(n) for n in sorted(names)]).items():
            rows = _segment_rows(uri, data)
            for sha256 in want & rows.keys():
                features = self._verified(sha256, rows[sha256])
                if features is None:
                    damaged.add(sha256)
                else:
                    found[sha256] = features
        if damaged - found.keys():
            bad = sorted(damaged - found.keys())
            log.warning(
                "%d cached features failed verification (damaged, replaced or non-finite) and "
                "are recomputed: images with content hash %s",
                len(bad),
                _examples(bad),
            )
        return Lookup(found, tuple(h for h in wanted if h not in found), len(names))

    def put(self, features: Mapping[str, np.ndarray], hint: str) -> None:
        """Store {hash: features (D,)} with their checksums as one new segment under `hint`
        (non-finite values are never stored); describes the key in key.json once."""
        rows = {}
        for sha256, value in features.items():
            values = np.asarray(value, DTYPE)
            if np.isfinite(values).all():
                data = values.tobytes()
                rows[sha256] = data + self._checksum(sha256, data)
        if not rows:
            return
        self._describe()
        table = pa.table({"sha256": list(rows), "data": pa.array(rows.values(), pa.binary())})
        name = join(hint, f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet")
        write_many({self._segment_uri(name): parquet_bytes(table)})

    def _describe(self) -> None:
        manifest = join(self.uri, "key.json")
        if manifest in _DESCRIBED:
            return
        if not exists(manifest):
            write_json(
                {
                    "feature_key": self.key,
                    "layout": LAYOUT,
                    "config": self.config.model_dump(mode="json"),
                    "model_id": self.model_id,
                    "features": list(feature_names(self.config.method)),
                    "dtype": DTYPE.str,
                    "diffpath": version("diffpath"),
                },
                manifest,
            )
        _DESCRIBED.add(manifest)  # after the write: a failed one is tried again


def _read_table(
    what: str, uri: str, data: bytes | OSError, consequence: str, columns: list[str] | None = None
) -> pa.Table | None:
    """A cache file's table from `read_each`; None when it is gone (deleted by a compaction)
    or damaged (a warning naming it and the `consequence`); transient failures raise, to be
    retried."""
    if isinstance(data, FileNotFoundError):
        return None
    try:
        if isinstance(data, OSError):
            raise data
        return pq.read_table(pa.BufferReader(data), columns=columns)
    except (pa.ArrowException, OSError) as err:
        if isinstance(err, OSError) and is_transient(err):
            raise StorageError(f"cannot read {what} {uri!r}: {err}") from err
        log.warning("%s %s cannot be read (%s): %s", what, uri, err, consequence)
        return None


def _segment_rows(uri: str, data: bytes | OSError) -> dict[str, bytes]:
    """{sha256: row bytes} of one segment; {} for one gone or damaged (then recomputed)."""
    table = _read_table(
        "cache segment", uri, data, "its features are recomputed", ["sha256", "data"]
    )
    if table is None:
        return {}
    return dict(zip(table["sha256"].to_pylist(), table["data"].to_pylist(), strict=True))


def _newest(folder: str, loaded: _Index | None = None) -> _Index:
    """The newest generation under `folder` (`loaded` if it still is); an empty one when
    there is none or it cannot be read (a warning: the next compaction rebuilds it). One
    deleted by a compaction between the listing and the read is listed again."""
    while True:
        generation = (numbered(folder, ".parquet") or [None])[-1]
        if loaded is not None and loaded.generation == generation:
            return loaded
        index = _read_index(folder, generation)
        if index is not None:
            return index


def _read_index(folder: str, generation: int | None) -> _Index | None:
    """Generation `generation` under `folder`; None if it is gone (superseded), an empty
    one if it cannot be read (with a warning)."""
    if generation is None:
        return _Index()
    uri = join(folder, f"{generation:010d}.parquet")
    data = read_each([uri])[uri]
    if isinstance(data, FileNotFoundError):
        return None
    table = _read_table("the cache index", uri, data, "it is rebuilt")
    if table is not None:
        try:
            meta = json.loads(table.schema.metadata[b"diffpath"])
            prefixes, segments = table["prefix"].to_numpy(), table["segment"].to_numpy()
            return _Index(generation, prefixes, segments, meta["names"], set(meta["covered"]))
        except (KeyError, TypeError, ValueError) as err:
            log.warning("the cache index %s holds no index (%s): it is rebuilt", uri, err)
    return _Index(generation)


def _compact(uri: str) -> Compaction:
    """Fold the segments of one cache written since its newest generation into the next."""
    folder = join(uri, "index")
    index = _newest(folder)
    newest = index.generation
    rebuild = newest is not None and not index.covered  # unreadable: start from the segments
    present = [name for name in find(join(uri, "segments")) if name.endswith(".parquet")]
    loose = sorted(
        (name for name in present if rebuild or name not in index.covered),
        key=lambda name: name.rsplit("/", 1)[-1],  # `<time>-<id>`: oldest first
    )
    if not loose:
        return Compaction(uri, None, 0, 0)
    referenced = {index.names[s] for s in np.unique(index.segments)}
    superseded = set() if rebuild else index.covered - referenced
    names = [] if rebuild else [n for n in index.names if n in referenced]
    keep = [] if rebuild else [i for i, n in enumerate(index.names) if n in referenced]
    renumber = np.zeros(len(index.names), np.uint32)
    renumber[keep] = np.arange(len(keep), dtype=np.uint32)
    prefixes = [np.empty(0, np.uint64) if rebuild else index.prefixes]
    segments = [np.empty(0, np.uint32) if rebuild else renumber[index.segments]]
    read = read_each([join(uri, "segments", name) for name in loose])
    for name in loose:
        segment_uri = join(uri, "segments", name)
        consequence = "left out of the index, deleted by the next compaction"
        table = _read_table(
            "cache segment", segment_uri, read[segment_uri], consequence, ["sha256"]
        )
        if table is None:
            continue  # covered but never referenced
        hashes = table["sha256"]
        prefixes.append(_prefix(hashes.to_pylist()))
        segments.append(np.full(len(hashes), len(names), np.uint32))
        names.append(name)
    prefix, segment = np.concatenate(prefixes), np.concatenate(segments)
    order = np.argsort(prefix, kind="stable")  # equal prefixes stay oldest → newest
    prefix, segment = prefix[order], segment[order]
    last = np.ones(len(prefix), bool)  # the newest copy of each prefix wins
    last[:-1] = prefix[1:] != prefix[:-1]
    table = pa.table({"prefix": prefix[last], "segment": segment[last]})
    covered = (index.covered - superseded) | set(loose)
    meta = {"names": names, "covered": sorted(covered)}
    generation = 0 if newest is None else newest + 1
    data = parquet_bytes(table, meta)
    if not create_exclusive(join(folder, f"{generation:010d}.parquet"), data):
        return Compaction(uri, None, 0, 0)  # another compaction won; ours waits for the next
    for name in sorted(superseded & set(present)):
        remove(join(uri, "segments", name))
    for old in numbered(folder, ".parquet"):
        if old < generation:
            remove(join(folder, f"{old:010d}.parquet"))
    return Compaction(uri, generation, len(loose), len(superseded & set(present)))


def compact_caches(root: str) -> list[Compaction]:
    """Compact the cache of every feature key under `root`; warns about a key that still
    holds per-image objects of an older diffpath (never read) until they are deleted."""
    done = []
    for key in listdir(root):
        uri, names = join(root, key), listdir(join(root, key))
        if "key.json" not in names:
            continue  # not a feature key's folder
        old = [n for n in names if len(n) == 2 and all(c in "0123456789abcdef" for c in n)]
        if old:
            log.warning(
                "%s holds per-image features of an older diffpath, which are not read (they "
                "are recomputed once): delete its %d two-letter folders to free the space",
                uri,
                len(old),
            )
        done.append(_compact(uri))
    return done
