"""Content-hash splits: each dataset splits into `fit`, `validation` and `test` (a set with
train and test files splits its train file into fit and validation); an image's split
never depends on its name or on what else is listed, and identical images never straddle
two splits."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from diffpath.benchmark.spec import ROLES, BenchmarkSpec, Sizes
from diffpath.errors import ConfigError
from diffpath.io.identity import content_hash
from diffpath.io.sources import (
    ImageRef,
    Listing,
    list_source,
    listing_id,
    read_refs,
    refs_table,
    write_listing,
)
from diffpath.io.storage import (
    join,
)


def _identities(refs: Sequence[ImageRef], chunk: int = 4096) -> list[str]:
    """Each ref's content hash (read in chunks, never all bytes at once); an unreadable
    one keeps its locator, and its shard records the failure."""
    keys = []
    for start in range(0, len(refs), chunk):
        part = refs[start : start + chunk]
        contents = read_refs(part)
        keys += [
            content_hash(c) if isinstance(c, bytes) else r.locator
            for r, c in zip(part, contents, strict=True)
        ]
    return keys


def hash64(*parts: object) -> int:
    """64 bits of the sha256 of `parts` joined by NUL: no two lists of parts share it."""
    digest = hashlib.sha256("\0".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _unit(seed: int, key: str) -> float:
    """A uniform number in [0, 1) from an image's content hash: its place in the split —
    the same in any file or under any name, and identical images always go together."""
    return hash64(seed, key) / 2**64


def split_refs(spec: BenchmarkSpec, name: str, sizes: Sizes) -> dict[str, list[ImageRef]]:
    """{role: refs} of a dataset, each role capped at its size, in listing order."""
    dataset = spec.datasets[name]
    roles: dict[str, list[tuple[ImageRef, str]]] = {role: [] for role in ROLES}
    if dataset.source is not None:
        test, validation = spec.test_fraction, spec.test_fraction + spec.validation_fraction
        refs = list_source(spec.uri(dataset.source))
        for ref, key in zip(refs, _identities(refs), strict=True):
            u = _unit(spec.seed, key)
            role = "test" if u < test else "validation" if u < validation else "fit"
            roles[role].append((ref, key))
    else:
        refs = list_source(spec.uri(dataset.train))
        for ref, key in zip(refs, _identities(refs), strict=True):
            role = "validation" if _unit(spec.seed, key) < spec.validation_fraction else "fit"
            roles[role].append((ref, key))
        refs = list_source(spec.uri(dataset.test))
        roles["test"] = list(zip(refs, _identities(refs), strict=True))
    chosen = {}
    for role, members in roles.items():
        keep = sorted(members, key=lambda m: _unit(spec.seed + 1, m[1]))[: getattr(sizes, role)]
        chosen[role] = sorted((ref for ref, _ in keep), key=lambda r: (r.uri, r.row or 0))
        if len(chosen[role]) < 2:
            raise ConfigError(f"dataset {name!r} has {len(chosen[role])} images for {role}")
    return chosen


def store_splits(
    spec: BenchmarkSpec, name: str, sizes: Sizes, out: str, shard_size: int
) -> dict[str, Listing]:
    """Split a dataset and store each role's listing under `out/listings/`."""
    listings = {}
    for role, refs in split_refs(spec, name, sizes).items():
        rows = refs_table(refs)
        lid = listing_id(rows)
        uri = write_listing(rows, join(out, "listings", f"{lid}.parquet"), shard_size)
        listings[role] = Listing(uri=uri, listing_id=lid, n_images=len(refs), shard_size=shard_size)
    return listings
