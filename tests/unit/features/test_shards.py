"""Feature shards: rows follow locators, features follow bytes, foreign shards refused."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from diffpath.config import FeatureConfig
from diffpath.errors import StorageError
from diffpath.features import shards
from diffpath.features.cache import FeatureCache
from diffpath.features.shards import compute_shard, featurize_shard, shard_hint
from diffpath.io.identity import content_hash
from diffpath.io.sources import list_source, store_listing


def test_shard_rows_follow_locators_and_features_follow_bytes(
    tmp_path, tiny_model, tiny_config
) -> None:
    from tests.conftest import SAMPLES

    images = [
        row for row in pq.read_table(SAMPLES / "incoming.parquet").column("image").to_pylist()[:3]
    ]
    # one name twice, one content twice, one unreadable cell
    table = pa.table(
        {"image": [images[0], images[1], images[0], None], "path": ["a", "a", "b", "c"]}
    )
    pq.write_table(table, tmp_path / "src.parquet")
    refs = list_source(str(tmp_path / "src.parquet"))
    cache = str(tmp_path / "cache")
    table, computed, cached = compute_shard(tiny_model, refs, tiny_config, cache)
    frame = pl.from_arrow(table)
    assert (computed, cached) == (2, 0)
    assert frame["row"].to_list() == [0, 1, 2, 3] and frame["path"].to_list() == [
        "a",
        "a",
        "b",
        "c",
    ]
    assert frame["sha256"].to_list()[:3] == [
        content_hash(images[0]),
        content_hash(images[1]),
        content_hash(images[0]),
    ]
    features = frame.drop("uri", "row", "path", "sha256", "phash", "error").to_numpy()
    np.testing.assert_array_equal(features[0], features[2])  # same bytes, same features
    assert not np.array_equal(features[0], features[1])  # same name, other bytes
    assert frame["error"][3] is not None and np.isnan(features[3]).all()
    again, computed, cached = compute_shard(tiny_model, refs, tiny_config, cache)
    assert (computed, cached) == (0, 3) and again.equals(table)


def test_a_combination_reads_the_parts_it_has_and_computes_the_rest(
    tmp_path, tiny_model, tiny_config
) -> None:
    from tests.conftest import SAMPLES

    images = pq.read_table(SAMPLES / "incoming.parquet").column("image").to_pylist()[:2]
    pq.write_table(pa.table({"image": images}), tmp_path / "src.parquet")
    refs = list_source(str(tmp_path / "src.parquet"))
    root = str(tmp_path / "cache")
    ddim = tiny_config.model_copy(update={"method": "diffpath6d"})
    first, computed, _ = compute_shard(tiny_model, refs, ddim, root)
    marker = np.arange(6, dtype=np.float32)  # planted: the combination must read, not recompute
    planted = {first["sha256"][0].as_py(): marker}
    FeatureCache(root, ddim, tiny_model.model_id).put(planted, shard_hint(refs))
    combined = tiny_config.model_copy(update={"method": "diffpathv2+6d"})
    table, computed, cached = compute_shard(tiny_model, refs, combined, root)
    assert (computed, cached) == (2, 0)  # the V2 part was missing for both
    frame = pl.from_arrow(table)
    np.testing.assert_array_equal(frame.select(pl.col("^eps_.*$", "^deriv_s.*$")).row(0), marker)
    v2_alone, computed, cached = compute_shard(tiny_model, refs, tiny_config, root)
    assert (computed, cached) == (0, 2)
    np.testing.assert_array_equal(
        frame.select("err_l1").to_series(), pl.from_arrow(v2_alone)["err_l1"]
    )


@pytest.mark.hostile(
    ("fault: a feature shard of another run swapped in", "refused in one line naming it"),
)
def test_a_shard_copied_from_another_listing_is_refused(tmp_path) -> None:
    import shutil

    from diffpath.errors import StorageError
    from diffpath.features.shards import read_shards, shard_uri, write_shard

    config = FeatureConfig(method="diffpathv2")
    mine, theirs = (shard_uri(str(tmp_path), listing, 0, config) for listing in ("aaaa", "bbbb"))
    for uri, n in ((mine, 12), (theirs, 16)):
        write_shard(uri, pa.table({"row": list(range(n))}), config, "m")
    assert len(read_shards([mine], config)[0]) == 12
    shutil.copyfile(theirs, mine)  # another run's shard swapped in
    with pytest.raises(StorageError, match=r"holds shard bbbb-.* of 16 rows, not this listing's"):
        read_shards([mine], config)


def test_a_shard_that_fails_midway_keeps_the_batches_it_finished(
    tmp_path, tiny_model, tiny_config, monkeypatch
):
    """Features go to the cache every FLUSH_SECONDS (here: every batch), under the shard's
    hint: a retry finds them and computes only the rest."""
    from dataclasses import replace

    monkeypatch.setattr("diffpath.features.shards.FLUSH_SECONDS", 0.0)
    from tests.conftest import SAMPLES

    class FailsOnThirdCall(torch.nn.Module):
        def __init__(self, unet: torch.nn.Module) -> None:
            super().__init__()
            self.unet, self.calls = unet, 0

        def forward(self, x, t):
            self.calls += 1
            if self.calls == 3:
                raise RuntimeError("the worker died")
            return self.unet(x, t)

    refs = list_source(str(SAMPLES / "incoming.parquet"))[:12]
    config, tiny_model = tiny_config, replace(tiny_model, batch_size=4, forward_batch=10**6)
    flaky = replace(tiny_model, unet=FailsOnThirdCall(tiny_model.unet))
    cache = str(tmp_path / "cache")
    with pytest.raises(RuntimeError, match="the worker died"):
        compute_shard(flaky, refs, config, cache)
    _, computed, cached = compute_shard(tiny_model, refs, config, cache)
    assert (computed, cached) == (12 - 8, 8)  # two batches of 4 were stored before the failure


def test_prefetching_reads_each_shard_once_and_changes_nothing(
    tmp_path, tiny_model, tiny_config, monkeypatch
) -> None:
    from tests.conftest import SAMPLES

    listing = store_listing([str(SAMPLES / "incoming.parquet")], str(tmp_path), 16, 48, 0)
    real, reads = shards.read_refs, []

    def counted(refs):
        reads.append(len(refs))
        return real(refs)

    monkeypatch.setattr(shards, "read_refs", counted)

    def run(name: str, prefetch: bool) -> list[pa.Table]:
        cache, out = str(tmp_path / name / "cache"), str(tmp_path / name)
        done = [
            featurize_shard(tiny_model, listing, i, tiny_config, cache, out, prefetch=prefetch)
            for i in range(listing.n_shards)
        ]
        return [pq.read_table(c.uri) for c in done]

    plain = run("plain", prefetch=False)
    assert reads == [16, 16, 16]
    reads.clear()
    assert run("ahead", prefetch=True) == plain
    assert reads == [16, 16, 16]  # shards 1 and 2 were read ahead, once each

    def flaky(refs):  # the early read of shard 1 fails as a dropped connection would
        reads.append(len(refs))
        if len(reads) == 2:
            raise StorageError("cannot read …: connection reset (transient; retried)")
        return real(refs)

    reads.clear()
    monkeypatch.setattr(shards, "read_refs", flaky)
    assert run("flaky", prefetch=True) == plain
    assert reads == [16, 16, 16, 16]  # shard 1 read again by itself
