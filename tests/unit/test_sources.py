import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from diffpath.errors import StorageError
from diffpath.sources import list_source, read_listing, read_refs, subsample, write_listing


def test_folder_listing_is_recursive_case_insensitive_and_sorted(tmp_path) -> None:
    for name in ["b/2.PNG", "a.jpg", "b/1.JpEg", "c/deep/3.tiff", "notes.txt", "x.webp"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(name.encode())
    refs = list_source(str(tmp_path))
    assert [r.key for r in refs] == ["a.jpg", "b/1.JpEg", "b/2.PNG", "c/deep/3.tiff", "x.webp"]
    items, errors = read_refs(refs)
    assert dict(items)["b/2.PNG"] == b"b/2.PNG" and errors == {}


def test_hugging_face_struct_column_and_missing_keys(tmp_path) -> None:
    struct = pa.array(
        [{"bytes": b"one", "path": "p/1.png"}, {"bytes": b"two", "path": "p/2.png"}],
        pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
    )
    pq.write_table(pa.table({"image": struct}), tmp_path / "hf.parquet")
    pq.write_table(pa.table({"image": [b"a", None]}), tmp_path / "plain.parquet")
    refs = list_source([str(tmp_path / "hf.parquet"), str(tmp_path / "plain.parquet")])
    assert [r.key for r in refs] == ["p/1.png", "p/2.png", "plain.parquet#0", "plain.parquet#1"]
    items, errors = read_refs(refs)
    assert items == [("p/1.png", b"one"), ("p/2.png", b"two"), ("plain.parquet#0", b"a")]
    assert list(errors) == ["plain.parquet#1"]  # a null cell is a recorded failure


def test_missing_and_empty_sources_raise(tmp_path) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        list_source(str(tmp_path / "nope"))
    with pytest.raises(StorageError, match="no images"):
        list_source(str(tmp_path))
    pq.write_table(pa.table({"pixels": [b"a"]}), tmp_path / "bad.parquet")
    with pytest.raises(StorageError, match="no 'image' column"):
        list_source(str(tmp_path / "bad.parquet"))


def test_subsample_and_listing_round_trip(tmp_path) -> None:
    for i in range(20):
        (tmp_path / f"{i:02d}.png").write_bytes(b"x")
    refs = list_source(str(tmp_path))
    picked = subsample(refs, 5, seed=3)
    assert picked == subsample(refs, 5, seed=3) and picked == sorted(picked)
    assert picked != subsample(refs, 5, seed=4)
    uri = write_listing(picked, str(tmp_path / "out" / "listing.parquet"))
    assert read_listing(uri) == picked
