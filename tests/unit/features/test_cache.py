"""The content-addressed feature cache: its layout, and damaged objects never served."""

from __future__ import annotations

import numpy as np
import pytest

from diffpath.config import FeatureConfig
from diffpath.features.cache import FeatureCache
from diffpath.io.identity import content_hash


def test_get_put_by_content_hash_and_layout(tmp_path) -> None:
    config = FeatureConfig(method="diffpathv2")
    cache = FeatureCache(str(tmp_path), config, "m1")
    h = content_hash(b"image")
    assert cache.get([h]) == {}
    cache.put({h: np.arange(6, dtype=np.float32)})
    np.testing.assert_array_equal(cache.get([h, h, content_hash(b"other")])[h], np.arange(6))
    assert (tmp_path / f"{config.config_hash()}-m1" / h[:2] / h[2:4] / h).stat().st_size == 24 + 16
    assert (tmp_path / f"{config.config_hash()}-m1" / "key.json").exists()
    assert FeatureCache(str(tmp_path), config, "m2").get([h]) == {}  # other weights, other key
    moved = FeatureCache(str(tmp_path), config.model_copy(update={"model": "/x"}), "m1")
    assert h in moved.get([h])  # the same weights elsewhere: the same key


@pytest.mark.hostile(
    ("fault: a cache object truncated", "not served; recomputed, a warning names the image"),
    (
        "fault: a cache object replaced by another image's",
        "not served; recomputed, a warning names the image",
    ),
    (
        "fault: one bit flipped in a cache object",
        "not served; recomputed, a warning names the image",
    ),
    ("fault: NaN in a cache object", "not served; recomputed and replaced"),
    ("a non-finite feature to cache", "never cached"),
)
def test_a_damaged_replaced_or_non_finite_object_is_never_served(tmp_path, caplog) -> None:
    cache = FeatureCache(str(tmp_path), FeatureConfig(method="diffpathv2"), "m")
    h, other = content_hash(b"image"), content_hash(b"another image")
    cache.put({h: np.ones(6, np.float32), other: np.full(6, 7.0, np.float32)})
    path = lambda sha: tmp_path / cache.key / sha[:2] / sha[2:4] / sha  # noqa: E731
    good = path(h).read_bytes()
    flipped = bytearray(good)
    flipped[3] ^= 0x01
    nan = np.full(6, np.nan, np.float32).tobytes()
    for damaged in (good[:10], path(other).read_bytes(), bytes(flipped), nan + good[-16:]):
        path(h).write_bytes(damaged)
        assert cache.get([h, other]).keys() == {other}
        assert f"content hash {h}" in caplog.records[-1].getMessage()
    cache.put({h: np.ones(6, np.float32)})  # recomputed: the object is replaced
    np.testing.assert_array_equal(cache.get([h])[h], np.ones(6))
    cache.put({h: np.full(6, np.inf, np.float32)})  # a non-finite value is never cached
    np.testing.assert_array_equal(cache.get([h])[h], np.ones(6))
