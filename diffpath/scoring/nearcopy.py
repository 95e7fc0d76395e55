"""Near copies: groups of near-duplicate images within a run, and leaks from a protected set.

Two images are near copies when their perceptual hashes (`diffpath.io.phash`) differ in
at most `NEAR_BITS` of 64 bits: measured on CIFAR-10 and CelebA (benchmarks/nearcopy.py,
docs/nearcopy.md), re-encoded, resized and brightness-shifted copies fall within it and
distinct images almost never do. Pairs are found without comparing all of them: the hash
is cut into four 16-bit bands, and two hashes within 7 bits agree on some band up to one
bit (pigeonhole), so joining each band on its value and its 16 one-bit neighbours finds
every pair within 7 bits, however many images there are (exact, not approximate).

A protected set (a test set, another customer's data) is indexed once: its images' hashes,
and those of their mirror images, so a flipped copy matches too. The hashes are cached by
content under the feature cache (`PhashStore`), so tomorrow's check decodes only new files.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
from scipy.sparse import csr_matrix

from diffpath.errors import StorageError
from diffpath.io.identity import content_hash
from diffpath.io.phash import hamming, perceptual_hashes
from diffpath.io.sources import list_source, read_refs
from diffpath.io.storage import find, join, read_parquet, write_parquet

__all__ = [
    "NEAR_BITS",
    "PhashStore",
    "ProtectedIndex",
    "duplicate_groups",
    "leak_matches",
    "near_pairs",
    "protected_index",
]

log = logging.getLogger(__name__)

NEAR_BITS = 2  # at most this many of 64 bits differ between near copies (docs/nearcopy.md)
_BANDS, _BAND_BITS = 4, 16
_CHUNK = 4096  # protected images read and hashed at a time


_BATCH = 1 << 23  # candidate pairs verified at a time: bounds a search's memory (~300 MB)
_ROWS = 1 << 16  # hashes probed at a time


def _band(hashes: np.ndarray, band: int) -> np.ndarray:
    return ((hashes >> np.uint64(_BAND_BITS * band)) & np.uint64(0xFFFF)).astype(np.int64)


def _candidates(
    keys: np.ndarray, theirs: np.ndarray, flips: np.ndarray
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(i, j) index pairs whose band keys agree up to one of `flips`, in batches of about
    `_BATCH`: `theirs` sorted by key, each probe's matches are the run of its key."""
    order = np.argsort(theirs, kind="stable")
    bounds = np.searchsorted(theirs[order], np.arange((1 << _BAND_BITS) + 1))  # each run
    for start in range(0, len(keys), _ROWS):
        probes = (keys[start : start + _ROWS, None] ^ flips[None, :]).ravel()
        low = bounds[probes]
        counts = bounds[probes + 1] - low
        ends = np.cumsum(counts)
        cuts = np.searchsorted(ends, np.arange(_BATCH, ends[-1], _BATCH), "right")
        for a, b in zip([0, *cuts], [*cuts, len(probes)], strict=True):
            n = counts[a:b]
            if not n.sum():
                continue
            first = np.repeat(low[a:b] - (ends[a:b] - n - (ends[a - 1] if a else 0)), n)
            rows = start + np.arange(a, b) // len(flips)
            yield np.repeat(rows, n), order[first + np.arange(n.sum())]


def near_pairs(
    left: np.ndarray, right: np.ndarray | None = None, bits: int = NEAR_BITS
) -> pl.DataFrame:
    """Index pairs (i, j, distance) of uint64 hashes within `bits` bits: `left` against
    `right`, or within `left` (i < j) when `right` is None. Exact for `bits` ≤ 7; within 3
    bits a band agrees exactly, so no neighbour is probed (17× fewer candidates); at 0
    equal hashes are joined in linear time."""
    if not 0 <= bits <= 2 * _BANDS - 1:
        raise ValueError(f"near copies are found within at most {2 * _BANDS - 1} bits, not {bits}")
    other = left if right is None else right
    if bits == 0:  # equal hashes: one join, linear
        ours = pl.DataFrame({"i": np.arange(len(left)), "h": left})
        pairs = ours.join(pl.DataFrame({"j": np.arange(len(other)), "h": other}), on="h")
        pairs = pairs.filter(pl.col("i") < pl.col("j")) if right is None else pairs
        return pairs.select("i", "j", distance=pl.lit(0)).cast(pl.Int64).sort("i", "j")
    flips = np.array([0] + ([1 << b for b in range(_BAND_BITS)] if bits >= _BANDS else []))
    found = []
    for band in range(_BANDS):
        for i, j in _candidates(_band(left, band), _band(other, band), flips):
            if right is None:
                i, j = i[i < j], j[i < j]
            distance = hamming(left[i], other[j])
            near = distance <= bits
            found.append(pl.DataFrame({"i": i[near], "j": j[near], "distance": distance[near]}))
    schema = {"i": pl.Int64, "j": pl.Int64, "distance": pl.Int64}
    return pl.concat([pl.DataFrame(schema=schema), *found]).cast(schema).unique().sort("i", "j")


def _leaders(pairs: pl.DataFrame, first_seen: np.ndarray) -> np.ndarray:
    """Each hash's group, led by a hash: in listing order, a hash not yet in a group leads
    one and takes every near hash not yet in one. Every member is then within the bits of
    its group's first member, and no chain of near pairs joins images far apart."""
    n, i, j = len(first_seen), pairs["i"].to_numpy(), pairs["j"].to_numpy()
    graph = csr_matrix((np.ones(2 * len(i), bool), (np.r_[i, j], np.r_[j, i])), shape=(n, n))
    labels, taken = np.arange(n), np.zeros(n, dtype=bool)
    order = np.argsort(first_seen, kind="stable")
    for leader in order[np.diff(graph.indptr)[order] > 0]:  # hashes with a near one
        if taken[leader]:
            continue
        near = graph.indices[graph.indptr[leader] : graph.indptr[leader + 1]]
        near = near[~taken[near]]
        labels[near], taken[near], taken[leader] = leader, True, True
    return labels


def duplicate_groups(frame: pl.DataFrame, bits: int = NEAR_BITS) -> pl.DataFrame:
    """Groups of near-duplicate images among a run's rows (locator, sha256, phash): one row
    per member — group (1 = largest), the locator, sha256, `distance` (bits from the
    group's first member, at most `bits`) and `identical` (its bytes are another member's).
    A group is its first image (in listing order) and the near copies of it (`_leaders`)."""
    rows = frame.filter(pl.col("phash").is_not_null()).sort("uri", "row")
    distinct, first_seen, inverse = np.unique(
        rows["phash"].to_numpy(), return_index=True, return_inverse=True
    )
    labels = _leaders(near_pairs(distinct, bits=bits), first_seen)[inverse]
    members = rows.select("uri", "row", "path", "sha256", "phash").with_columns(
        component=pl.Series(labels, dtype=pl.Int64)
    )
    grouped = members.filter(pl.len().over("component") > 1)
    first = pl.col("phash").first().over("component")
    grouped = grouped.with_columns(
        distance=pl.Series(
            hamming(grouped["phash"].to_numpy(), grouped.select(first).to_series().to_numpy()),
            dtype=pl.Int64,
        ),
        identical=pl.col("sha256").is_duplicated().over("component"),
        size=pl.len().over("component"),
        start=pl.int_range(pl.len()).over("component") == 0,
    )
    order = (
        grouped.filter("start")
        .sort(["size", "uri", "row"], descending=[True, False, False])
        .with_row_index("group", offset=1)
        .select("component", pl.col("group").cast(pl.Int64))
    )
    return (
        grouped.join(order, on="component")
        .sort("group", "uri", "row")
        .select("group", "uri", "row", "path", "sha256", "distance", "identical")
    )


class PhashStore:
    """Perceptual hashes (and their mirror images') by content hash under `root`: segments of
    (sha256, phash, mirror) rows, one per new batch, read whole (24 bytes an image)."""

    def __init__(self, root: str) -> None:
        self.folder = join(root, "phash")
        self.known: dict[str, tuple[int, int]] = {}
        for name in find(self.folder):
            try:
                table = read_parquet(join(self.folder, name))
                rows = zip(
                    *(table[c].to_pylist() for c in ("sha256", "phash", "mirror")), strict=True
                )
                self.known |= {sha: (h, m) for sha, h, m in rows}
            except (StorageError, KeyError, pa.ArrowException) as err:  # recomputed, not fatal
                log.warning(
                    "perceptual hashes in %s/%s not read (recomputed): %s", self.folder, name, err
                )

    def put(self, fresh: dict[str, tuple[int, int]]) -> None:
        """Store new hashes as one segment."""
        if not fresh:
            return
        shas = list(fresh)
        table = pa.table(
            {
                "sha256": pa.array(shas, pa.string()),
                "phash": pa.array([fresh[s][0] for s in shas], pa.uint64()),
                "mirror": pa.array([fresh[s][1] for s in shas], pa.uint64()),
            }
        )
        write_parquet(table, join(self.folder, f"{uuid.uuid4().hex}.parquet"))
        self.known |= fresh


@dataclass(frozen=True)
class ProtectedIndex:
    """A protected set's images (locator, sha256, phash, mirror: the mirror image's hash)
    and how many of the listed ones could not be read or decoded (left out)."""

    images: pl.DataFrame
    n_listed: int
    sources: tuple[str, ...]

    @property
    def n_unreadable(self) -> int:
        return self.n_listed - len(self.images)

    def describe(self) -> dict[str, Any]:
        """What a run's summary says of the check."""
        return {
            "sources": list(self.sources),
            "n_protected": len(self.images),
            "n_unreadable": self.n_unreadable,
        }

    def save(self, uri: str) -> str:
        meta = {"n_listed": self.n_listed, "sources": list(self.sources)}
        return write_parquet(self.images.to_arrow(), uri, meta)

    @classmethod
    def load(cls, uri: str) -> ProtectedIndex:
        table = read_parquet(uri)
        meta = json.loads(table.schema.metadata[b"diffpath"])
        images = pl.from_arrow(table.replace_schema_metadata(None))
        return cls(images, meta["n_listed"], tuple(meta["sources"]))


def protected_index(
    source: Sequence[str],
    cache_root: str,
    progress: Callable[[int], None] | None = None,
) -> ProtectedIndex:
    """Index a protected set: each image's perceptual hash and its mirror image's, decoding
    only contents the store under `cache_root` has not seen (the bytes are read to know
    their content, as for features)."""
    refs = list_source(list(source))
    store, fresh, rows = PhashStore(cache_root), {}, []
    for start in range(0, len(refs), _CHUNK):
        chunk = refs[start : start + _CHUNK]
        readable = [
            (ref, data, content_hash(data))
            for ref, data in zip(chunk, read_refs(chunk), strict=True)
            if isinstance(data, bytes)
        ]
        new = {
            sha: data for _, data, sha in readable if sha not in store.known and sha not in fresh
        }
        hashes, decoded = perceptual_hashes(list(new.values()))
        mirrors, _ = perceptual_hashes(list(new.values()), mirror=True)
        fresh |= {
            sha: (int(h), int(m))
            for sha, h, m, ok in zip(new, hashes, mirrors, decoded, strict=True)
            if ok
        }
        for ref, _, sha in readable:
            if (value := store.known.get(sha) or fresh.get(sha)) is not None:
                rows.append((ref.uri, ref.row, ref.path, sha, *value))
        if progress:
            progress(len(chunk))
    store.put(fresh)
    schema = {
        "uri": pl.String,
        "row": pl.Int64,
        "path": pl.String,
        "sha256": pl.String,
        "phash": pl.UInt64,
        "mirror": pl.UInt64,
    }
    images = pl.DataFrame(rows, schema=schema, orient="row")
    return ProtectedIndex(images, len(refs), tuple(source))


def leak_matches(frame: pl.DataFrame, index: ProtectedIndex, bits: int = NEAR_BITS) -> pl.DataFrame:
    """The run's images that are near copies of a protected image (or of its mirror image):
    one row each — its locator and sha256, the closest protected image (`protected_uri`,
    `protected_row`, `protected_path`, `protected_sha256`), the `distance` in bits and
    whether the match is `mirrored` — closest first."""
    rows = frame.filter(pl.col("phash").is_not_null()).sort("uri", "row")
    ours = rows["phash"].to_numpy()
    protected = index.images
    matches = pl.concat(
        [
            near_pairs(ours, protected[column].to_numpy(), bits).with_columns(
                mirrored=pl.lit(column == "mirror")
            )
            for column in ("phash", "mirror")
        ]
    )
    best = matches.sort("distance", "mirrored", "j").group_by("i", maintain_order=True).first()
    theirs = protected.select(
        pl.int_range(pl.len(), dtype=pl.Int64).alias("j"),
        *(pl.col(c).alias(f"protected_{c}") for c in ("uri", "row", "path", "sha256")),
    )
    return (
        rows.select("uri", "row", "path", "sha256")
        .with_row_index("i")
        .with_columns(pl.col("i").cast(pl.Int64))
        .join(best, on="i")
        .join(theirs, on="j")
        .sort("distance", "uri", "row")
        .select(
            "uri",
            "row",
            "path",
            "sha256",
            "distance",
            "mirrored",
            "protected_uri",
            "protected_row",
            "protected_path",
            "protected_sha256",
        )
    )
