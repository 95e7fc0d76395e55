"""The content-addressed feature cache: segments, the compacted index, and damaged rows
never served."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from diffpath.config import FeatureConfig
from diffpath.features.cache import MAX_TOUCHED, FeatureCache, compact_caches
from diffpath.io.identity import content_hash

CONFIG = FeatureConfig(method="diffpathv2")


def hashes(n: int, tag: str = "") -> list[str]:
    return [content_hash(f"{tag}image {i}".encode()) for i in range(n)]


def values(n: int, start: float = 0.0) -> list[np.ndarray]:
    return [np.full(6, start + i, np.float32) for i in range(n)]


def segments(cache: FeatureCache) -> list[Path]:
    return sorted((Path(cache.uri) / "segments").rglob("*.parquet"))


def test_get_put_by_content_hash_and_layout(tmp_path) -> None:
    cache = FeatureCache(str(tmp_path), CONFIG, "m1")
    h, other = hashes(2)
    assert cache.get([h]).features == {}
    cache.put({h: np.arange(6, dtype=np.float32)}, "shard-a")
    lookup = cache.get([h, h, other], "shard-a")  # its own segment, by its hint
    found = lookup.features
    np.testing.assert_array_equal(found[h], np.arange(6))
    assert other not in found and lookup.missing == (other,)  # what to compute, once
    assert cache.get([h], "shard-b").features == {}  # another shard: not before compaction
    (done,) = compact_caches(str(tmp_path))
    assert (done.generation, done.folded) == (0, 1)
    assert h in cache.get([h], "shard-b").features  # any shard, once compacted
    assert (tmp_path / f"{CONFIG.config_hash()}-m1" / "key.json").exists()
    assert [p.parent.name for p in segments(cache)] == ["shard-a"]
    assert FeatureCache(str(tmp_path), CONFIG, "m2").get([h]).features == {}  # other weights
    assert compact_caches(str(tmp_path))[0].generation is None  # nothing new: nothing written


def test_a_lookup_reads_only_the_segments_that_hold_its_hashes(tmp_path) -> None:
    cache = FeatureCache(str(tmp_path), CONFIG, "m")
    nights = [hashes(50, f"night {n}") for n in range(6)]
    for n, night in enumerate(nights):
        cache.put(dict(zip(night, values(50, 100 * n), strict=True)), f"shard-{n}")
    compact_caches(str(tmp_path))
    one = cache.get(nights[2][:30] + hashes(30, "new"))
    assert one.segments == 1 and len(one.features) == 30 and not one.scattered
    np.testing.assert_array_equal(one.features[nights[2][7]], np.full(6, 207))
    spread = cache.get([h for night in nights for h in night[:5]])
    assert spread.segments == 6 > MAX_TOUCHED and spread.scattered
    cache.put(spread.features, "gathered")  # what a shard does with scattered features
    compact_caches(str(tmp_path))
    again = cache.get([h for night in nights for h in night[:5]])
    assert again.segments == 1 and again.features.keys() == spread.features.keys()


def test_compaction_keeps_the_newest_copy_and_deletes_superseded_segments(tmp_path) -> None:
    cache = FeatureCache(str(tmp_path), CONFIG, "m")
    old = hashes(4)
    cache.put(dict(zip(old, values(4), strict=True)), "first")
    compact_caches(str(tmp_path))
    cache.put(dict(zip(old, values(4), strict=True)), "second")  # the same rows, newer
    done = compact_caches(str(tmp_path))[0]
    assert (done.generation, done.folded, done.deleted) == (1, 1, 0)
    assert cache.get(old).segments == 1
    cache.put({hashes(1, "x")[0]: values(1)[0]}, "third")
    done = compact_caches(str(tmp_path))[0]  # "first" lost every row at generation 1
    assert (done.generation, done.deleted) == (2, 1)
    assert [p.parent.name for p in segments(cache)] == ["second", "third"]
    assert [p.name for p in sorted((Path(cache.uri) / "index").iterdir())] == ["0000000002.parquet"]
    assert len(cache.get(old).features) == 4


def test_two_compactions_at_once_write_one_generation(tmp_path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    cache = FeatureCache(str(tmp_path), CONFIG, "m")
    for i in range(20):
        cache.put({hashes(1, str(i))[0]: values(1)[0]}, f"s{i}")
    with ThreadPoolExecutor(4) as pool:
        done = [c for r in pool.map(compact_caches, [str(tmp_path)] * 4) for c in r]
    assert sorted(d.generation for d in done if d.generation is not None) == [0]
    assert len(cache.get([hashes(1, str(i))[0] for i in range(20)]).features) == 20


def test_a_generation_superseded_between_listing_and_reading_is_listed_again(
    tmp_path, monkeypatch
) -> None:
    import diffpath.features.cache as module

    cache = FeatureCache(str(tmp_path), CONFIG, "m")
    h = hashes(1)[0]
    cache.put({h: values(1)[0]}, "a")
    compact_caches(str(tmp_path))
    cache.put({hashes(1, "b")[0]: values(1)[0]}, "b")
    compact_caches(str(tmp_path))  # generation 1; generation 0 deleted
    listed = iter([[0]])  # the first listing is stale: it still shows generation 0
    real = module.numbered
    monkeypatch.setattr(module, "numbered", lambda *a: next(listed, None) or real(*a))
    assert h in cache.get([h]).features


def rewrite_rows(segment, change) -> None:
    table = pq.read_table(segment)
    rows = table["data"].to_pylist()
    rows[0] = change(rows)
    pq.write_table(table.set_column(1, "data", pa.array(rows, pa.binary())), segment)


@pytest.mark.hostile(
    ("fault: a cache row truncated", "not served; recomputed, a warning names the image"),
    (
        "fault: a cache row replaced by another image's",
        "not served; recomputed, a warning names the image",
    ),
    ("fault: one bit flipped in a cache row", "not served; recomputed, a warning names the image"),
    ("fault: NaN in a cache row", "not served; recomputed and replaced"),
    ("a non-finite feature to cache", "never cached"),
)
def test_a_damaged_replaced_or_non_finite_row_is_never_served(tmp_path, caplog) -> None:
    cache = FeatureCache(str(tmp_path), CONFIG, "m")
    h, other = hashes(2)
    cache.put({h: np.ones(6, np.float32), other: np.full(6, 7.0, np.float32)}, "s")
    (segment,) = segments(cache)
    good = pq.read_table(segment)["data"].to_pylist()
    nan = np.full(6, np.nan, np.float32).tobytes()
    damages = (
        lambda rows: rows[0][:10],
        lambda rows: rows[1],
        lambda rows: bytes([rows[0][0] ^ 1]) + rows[0][1:],
        lambda rows: nan + rows[0][-16:],
    )
    for damage in damages:
        rewrite_rows(segment, lambda rows, damage=damage: damage(good))
        assert cache.get([h, other], "s").features.keys() == {other}
        assert f"content hash {h}" in caplog.records[-1].getMessage()
    cache.put({h: np.ones(6, np.float32)}, "s")  # recomputed: stored anew beside it
    np.testing.assert_array_equal(cache.get([h], "s").features[h], np.ones(6))
    compact_caches(str(tmp_path))
    np.testing.assert_array_equal(cache.get([h]).features[h], np.ones(6))  # the newest wins
    cache.put({other: np.full(6, np.inf, np.float32)}, "t")  # a non-finite value: never stored
    assert [p.parent.name for p in segments(cache)] == ["s", "s"]


@pytest.mark.hostile(
    ("fault: a cache segment truncated", "its features recomputed; a warning names the segment"),
    ("fault: the cache index truncated", "rebuilt from the segments; a warning names it"),
)
def test_a_damaged_segment_or_index_is_recomputed_or_rebuilt(tmp_path, caplog) -> None:
    cache = FeatureCache(str(tmp_path), CONFIG, "m")
    first, second = hashes(3, "a"), hashes(3, "b")
    cache.put(dict(zip(first, values(3), strict=True)), "a")
    cache.put(dict(zip(second, values(3), strict=True)), "b")
    compact_caches(str(tmp_path))
    (index,) = (Path(cache.uri) / "index").iterdir()
    index.write_bytes(index.read_bytes()[:20])
    with caplog.at_level(logging.WARNING):
        fresh = FeatureCache(str(tmp_path), CONFIG, "m")
        assert fresh.get(first).features == {}
        assert f"cache index {index}" in caplog.text
        compact_caches(str(tmp_path))  # rebuilt from every segment
        assert len(fresh.get(first + second).features) == 6
        damaged = segments(cache)[0]
        damaged.write_bytes(damaged.read_bytes()[:30])
        found = fresh.get(first + second).features
        assert len(found) == 3 and f"cache segment {damaged}" in caplog.text


def test_an_old_per_image_cache_is_named_with_what_to_do(tmp_path, caplog) -> None:
    cache = FeatureCache(str(tmp_path), CONFIG, "m")
    cache.put({hashes(1)[0]: values(1)[0]}, "s")
    (Path(cache.uri) / "ab" / "cd").mkdir(parents=True)
    with caplog.at_level(logging.WARNING):
        compact_caches(str(tmp_path))
    assert "delete its 1 two-letter folders" in caplog.text and cache.uri in caplog.text
