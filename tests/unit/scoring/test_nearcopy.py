"""Near copies: every pair within the bits found (checked against all pairs), groups led by
their first image, the protected set's hashes cached by content."""

from __future__ import annotations

import logging

import numpy as np
import polars as pl
import pytest

from diffpath.io.phash import hamming
from diffpath.scoring import nearcopy
from diffpath.scoring.nearcopy import PhashStore, duplicate_groups, near_pairs, protected_index
from tests.conftest import SAMPLES


def planted(seed: int = 0) -> np.ndarray:
    """3,000 random hashes and 800 copies of the first 800 with 0–7 bits flipped."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 2**63, 3000, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    copies = base[:800].copy()
    for k in range(len(copies)):
        for bit in rng.choice(64, k % 8, replace=False):
            copies[k] ^= np.uint64(1) << np.uint64(int(bit))
    return np.concatenate([base, copies])


@pytest.mark.parametrize(("bits", "batch"), [(0, None), (3, None), (6, None), (7, None), (6, 997)])
def test_banded_search_finds_exactly_the_pairs_all_pairs_find(bits, batch, monkeypatch) -> None:
    if batch:  # candidates verified a few hundred at a time, hashes probed 500 at a time
        monkeypatch.setattr(nearcopy, "_BATCH", batch)
        monkeypatch.setattr(nearcopy, "_ROWS", 500)
    hashes = planted()
    distance = hamming(hashes[:, None], hashes[None, :])
    i, j = np.nonzero(np.triu(distance <= bits, k=1))
    within = near_pairs(hashes, bits=bits)
    assert within.select("i", "j").rows() == list(zip(i.tolist(), j.tolist(), strict=True))
    assert (within["distance"].to_numpy() == distance[i, j]).all()
    across = near_pairs(hashes[:1500], hashes[3000:], bits=bits)
    ii, jj = np.nonzero(distance[:1500, 3000:] <= bits)
    assert across.select("i", "j").rows() == list(zip(ii.tolist(), jj.tolist(), strict=True))


def test_more_bits_than_the_bands_guarantee_are_refused() -> None:
    with pytest.raises(ValueError, match="at most 7 bits"):
        near_pairs(planted(), bits=8)


def test_protected_hashes_are_cached_by_content(tmp_path, caplog) -> None:
    source = [str(SAMPLES / "reference.parquet")]
    first = protected_index(source, str(tmp_path))
    assert first.n_unreadable == 0 and len(first.images) == first.n_listed
    segments = sorted((tmp_path / "phash").iterdir())
    assert len(segments) == 1
    again = protected_index(source, str(tmp_path))
    assert sorted((tmp_path / "phash").iterdir()) == segments  # nothing new to store
    assert again.images.equals(first.images)
    segments[0].write_bytes(b"torn")
    with caplog.at_level(logging.WARNING):
        rebuilt = protected_index(source, str(tmp_path))
    assert "not read (recomputed)" in caplog.text
    assert rebuilt.images.equals(first.images)
    assert len(PhashStore(str(tmp_path)).known) == first.images["sha256"].n_unique()


def test_saved_index_reads_back(tmp_path) -> None:
    index = protected_index([str(SAMPLES / "reference.parquet")], str(tmp_path))
    loaded = type(index).load(index.save(str(tmp_path / "protected.parquet")))
    assert loaded.images.equals(index.images)
    assert (loaded.n_listed, loaded.sources) == (index.n_listed, index.sources)


def test_groups_hold_the_first_image_and_its_near_copies_never_chains() -> None:
    # a ~ b ~ c two bits apart each, a and c four apart; d far from all; e the bytes of a
    hashes = [0, 0b11, 0b1111, 2**40 - 1, 0]
    frame = pl.DataFrame(
        {
            "uri": ["1", "2", "3", "4", "5"],
            "row": [None] * 5,
            "path": list("abcde"),
            "sha256": list("xyzwx"),
            "phash": hashes,
        },
        schema_overrides={"row": pl.Int64, "phash": pl.UInt64},
    )
    groups = duplicate_groups(frame, bits=2)
    assert groups.select("group", "path", "distance", "identical").rows() == [
        (1, "a", 0, True),
        (1, "b", 2, False),
        (1, "e", 0, True),
    ]
    assert duplicate_groups(frame, bits=4)["path"].to_list() == ["a", "b", "c", "e"]
