import hashlib
import logging

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from diffpath.errors import StorageError
from diffpath.io.sources import (
    ImageRef,
    list_source,
    listing_id,
    read_listing,
    read_refs,
    refs_table,
    store_listing,
    subsample,
)


def test_folder_listing_is_recursive_case_insensitive_and_sorted(tmp_path, caplog) -> None:
    for name in ["b/2.PNG", "a.jpg", "b/1.JpEg", "c/deep/3.tiff", "notes.txt", "x.webp"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(name.encode())
    refs = list_source(str(tmp_path))
    assert [r.path for r in refs] == ["a.jpg", "b/1.JpEg", "b/2.PNG", "c/deep/3.tiff", "x.webp"]
    assert refs[2] == ImageRef(str(tmp_path / "b" / "2.PNG"), None, "b/2.PNG")
    assert read_refs(refs)[2] == b"b/2.PNG"
    assert "1 files of" in caplog.text and "notes.txt" in caplog.text  # skipped, said so


def test_hugging_face_struct_column_and_missing_keys(tmp_path) -> None:
    struct = pa.array(
        [{"bytes": b"one", "path": "p/1.png"}, {"bytes": b"two", "path": None}],
        pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
    )
    pq.write_table(pa.table({"image": struct}), tmp_path / "hf.parquet")
    pq.write_table(pa.table({"image": [b"a", None]}), tmp_path / "plain.parquet")
    refs = list_source([str(tmp_path / "hf.parquet"), str(tmp_path / "plain.parquet")])
    assert [r.path for r in refs] == [
        "p/1.png",
        "hf.parquet#1",
        "plain.parquet#0",
        "plain.parquet#1",
    ]
    assert [r.locator for r in refs][:2] == [f"{tmp_path}/hf.parquet#0", f"{tmp_path}/hf.parquet#1"]
    contents = read_refs(refs)
    assert contents[:3] == [b"one", b"two", b"a"]
    assert "row 1" in contents[3]  # a null cell is a recorded failure, not an exception


def test_colliding_names_are_kept_apart_and_warned_about(tmp_path, caplog) -> None:
    for day, data in [("day1", b"face"), ("day2", b"texture")]:
        (tmp_path / day / "cam").mkdir(parents=True)
        (tmp_path / day / "cam" / "img_003.jpg").write_bytes(data)
    pq.write_table(pa.table({"image": [b"x", b"y"], "path": ["k", "k"]}), tmp_path / "p.parquet")
    with caplog.at_level(logging.WARNING, logger="diffpath"):
        refs = list_source(
            [str(tmp_path / "day1"), str(tmp_path / "day2"), str(tmp_path / "p.parquet")]
        )
    assert [r.path for r in refs] == ["cam/img_003.jpg", "cam/img_003.jpg", "k", "k"]
    assert len({r.locator for r in refs}) == 4
    assert read_refs(refs) == [b"face", b"texture", b"x", b"y"]
    assert "2 listed images share a path name" in caplog.text
    assert (
        list_source([str(tmp_path / "day1")] * 2) == refs[:1]
    )  # one file listed twice is one image


def test_parquet_rows_are_read_from_their_row_groups_only(tmp_path) -> None:
    table = pa.table({"image": [bytes([i]) * 10 for i in range(100)]})
    pq.write_table(table, tmp_path / "big.parquet", row_group_size=10)
    refs = list_source(str(tmp_path / "big.parquet"))
    assert read_refs([refs[95], refs[3], refs[44]]) == [
        bytes([95]) * 10,
        bytes([3]) * 10,
        bytes([44]) * 10,
    ]


def test_missing_and_empty_sources_raise(tmp_path) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        list_source(str(tmp_path / "nope"))
    with pytest.raises(StorageError, match="no images"):
        list_source(str(tmp_path))
    pq.write_table(pa.table({"pixels": [b"a"]}), tmp_path / "bad.parquet")
    with pytest.raises(StorageError, match="no 'image' column"):
        list_source(str(tmp_path / "bad.parquet"))


def test_subsample_and_listing_shards(tmp_path) -> None:
    for i in range(20):
        (tmp_path / f"{i:02d}.png").write_bytes(b"x")
    refs = list_source(str(tmp_path))
    picked = subsample(refs, 7, seed=3)
    assert picked == subsample(refs, 7, seed=3) and picked != subsample(refs, 7, seed=4)
    listing = store_listing([str(tmp_path)], str(tmp_path / "out"), 3, 7, seed=3)
    assert (listing.n_images, listing.n_shards) == (7, 3)
    assert listing.listing_id == listing_id(refs_table(picked))
    locators = "".join(f"{ref.locator}\n" for ref in picked).encode()  # as 0.3 named them
    assert listing.listing_id == hashlib.sha256(locators).hexdigest()[:16]
    assert read_listing(listing.uri) == picked
    shards = [read_listing(listing.uri, i) for i in range(listing.n_shards)]
    assert [len(s) for s in shards] == [3, 3, 1]
    assert [ref for shard in shards for ref in shard] == picked


@pytest.mark.hostile(("wrong credentials for a source", "one line naming the source"))
def test_a_source_that_refuses_access_is_named(tmp_path, monkeypatch) -> None:
    from fsspec.implementations.local import LocalFileSystem

    def forbidden(self, path, **kwargs):
        raise PermissionError("Forbidden")

    monkeypatch.setattr(LocalFileSystem, "find", forbidden)
    with pytest.raises(StorageError, match=f"cannot list '{tmp_path}': Forbidden"):
        list_source(str(tmp_path))


@pytest.mark.hostile(
    ("an image read times out after every storage retry", "the shard is retried, not an error row"),
)
def test_a_transient_read_failure_is_raised_for_a_retry_not_recorded(tmp_path, monkeypatch) -> None:
    import diffpath.io.sources as sources

    for name in ("ok.png", "slow.png", "denied.png"):
        (tmp_path / name).write_bytes(name.encode())
    refs = list_source(str(tmp_path))
    reader = sources._read_file

    def flaky(fs, path, uri, limit):
        if path.endswith("slow.png"):
            raise TimeoutError("read timed out")
        if path.endswith("denied.png"):
            raise PermissionError("access denied")
        return reader(fs, path, uri, limit)

    monkeypatch.setattr(sources, "read_each", lambda uris, limit: {})  # nothing prefetched
    monkeypatch.setattr(sources, "_read_file", flaky)
    with pytest.raises(StorageError, match=r"slow\.png.*transient"):
        read_refs(refs)
    denied = [r for r in refs if r.path != "slow.png"]
    contents = read_refs(denied)  # a permanent failure is the image's own error row
    assert contents[1] == b"ok.png" and "access denied" in contents[0]
