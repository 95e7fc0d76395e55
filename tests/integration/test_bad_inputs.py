"""A corpus of bad and odd inputs, generated here, screened in one run: each has its
expected outcome — scored, or one row in errors.parquet naming it — and nothing else breaks."""

from __future__ import annotations

import io
import json
import zlib

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_harness")]


def encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def picture(width: int = 40, height: int = 30, mode: str = "RGB") -> Image.Image:
    pixels = np.random.default_rng(width * height).integers(0, 255, (height, width, 3), np.uint8)
    return Image.fromarray(pixels).convert(mode)


def bad_crc_png() -> bytes:
    data = bytearray(encoded(picture(), "PNG"))
    ihdr_crc = 8 + 4 + 4 + 13  # signature, length, type, IHDR data
    data[ihdr_crc : ihdr_crc + 4] = (zlib.crc32(b"wrong") & 0xFFFFFFFF).to_bytes(4, "big")
    return bytes(data)


def png_bomb(side: int = 30000) -> bytes:
    """A PNG whose header claims side×side pixels (a decompression bomb), in a few bytes."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return len(body).to_bytes(4, "big") + kind + body + crc.to_bytes(4, "big")

    header = side.to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(side * 3 + 1)))
        + chunk(b"IEND", b"")
    )


def exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to view
    return encoded(picture(40, 20), "JPEG", exif=exif)


SCORED = {
    "grey.png": encoded(picture(mode="L"), "PNG"),
    "cmyk.jpg": encoded(picture(mode="CMYK"), "JPEG"),
    "rgba.png": encoded(picture(mode="RGBA"), "PNG"),
    "palette.gif": encoded(picture(mode="P"), "GIF"),
    "wide.png": encoded(picture(500, 30), "PNG"),
    "tiny.png": encoded(picture(1, 1), "PNG"),
    "rotated.jpg": exif_rotated_jpeg(),
    "<img src=x onerror=alert(1)>.png": encoded(picture(33, 33), "PNG"),
    "ünïcödé 名前.png": encoded(picture(34, 34), "PNG"),
    "face.jpg": encoded(picture(35, 35), "JPEG"),
    "face.jpg::tex.jpg": encoded(picture(36, 36), "PNG"),  # '::' is no URL chaining here
    "price $5 or $6.png": encoded(picture(37, 37), "PNG"),  # no mathtext in the report
}
FAILED = {
    "zero.jpg": b"",
    "truncated.jpg": encoded(picture(), "JPEG")[:100],
    "text.png": b"hello, I am not a picture",
    "svg.jpg": b"<svg xmlns='http://www.w3.org/2000/svg'><rect/></svg>",
    "page.jpg": b"<!doctype html><html><body>hi</body></html>",
    "bad-crc.png": bad_crc_png(),
    "bomb.png": png_bomb(),
    "huge.png": encoded(picture(600, 600), "PNG"),  # over DIFFPATH_MAX_IMAGE_BYTES below
    "metadata.parquet": b"",  # a stray Parquet file: written below
    "corrupt.parquet": b"PAR1 not really",
}
MAX_BYTES = 400_000


@pytest.mark.hostile(
    *[(f"file `{name}`", "scored from its own bytes") for name in SCORED],
    *[(f"file `{name}`", "one error row naming it") for name in FAILED],
)
def test_a_corpus_of_odd_and_bad_files(tmp_path, tiny_reference, monkeypatch) -> None:
    from diffpath.io.identity import content_hash
    from diffpath.scoring.alerts import ScreenPolicy
    from diffpath_flows.pipeline import screen_flow

    folder = tmp_path / "dump"
    folder.mkdir()
    for name, data in {**SCORED, **FAILED}.items():
        (folder / name).write_bytes(data)
    pq.write_table(pa.table({"n_images": [3]}), folder / "metadata.parquet")
    assert len(FAILED["huge.png"]) > MAX_BYTES > max(map(len, SCORED.values()))
    monkeypatch.setenv("DIFFPATH_MAX_IMAGE_BYTES", str(MAX_BYTES))
    reference = tiny_reference
    outputs = screen_flow(  # every image flagged: all of them in the report's table
        [str(folder)], reference, str(tmp_path / "out"), policy=ScreenPolicy(threshold=-1e9)
    )
    scores, errors = pl.read_parquet(outputs["scores"]), pl.read_parquet(outputs["errors"])
    assert sorted(scores["path"]) == sorted(SCORED)
    assert sorted(errors["path"]) == sorted(FAILED)
    for row in errors.iter_rows(named=True):
        assert row["path"] in row["error"] and "<_io" not in row["error"]
    assert scores["score"].is_finite().all()
    hashes = dict(zip(scores["path"], scores["sha256"], strict=True))
    assert all(hashes[name] == content_hash(data) for name, data in SCORED.items())
    duplicates = pl.read_parquet(outputs["duplicates"])  # one 40×30 picture in four modes
    assert sorted(duplicates["path"]) == ["cmyk.jpg", "grey.png", "palette.gif", "rgba.png"]
    assert duplicates["group"].n_unique() == 1 and not duplicates["identical"][1:].any()
    html = (tmp_path / "out" / "report.html").read_text()
    assert "<img src=x onerror" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["n_images"] == len(SCORED) + len(FAILED)


@pytest.mark.hostile(
    (
        "Parquet rows with duplicate and null keys, a null image, a non-image cell",
        "each row scored or an error row; duplicate keys kept apart",
    ),
    ("a Parquet source without an `image` column", "one line naming it"),
    ("an empty Parquet source", "one line: it holds no images"),
)
def test_odd_parquet_sources(tmp_path, tiny_config, tiny_run) -> None:
    from prefect import flow

    from diffpath.errors import StorageError
    from diffpath_flows.pipeline import featurize

    good = encoded(picture(), "PNG")
    pq.write_table(  # duplicate and null keys, a null image, a non-image
        pa.table({"image": [good, good, None, b"junk"], "path": ["a", "a", None, None]}),
        tmp_path / "odd.parquet",
    )
    pq.write_table(pa.table({"pixels": [good]}), tmp_path / "other-schema.parquet")
    pq.write_table(pa.table({"image": pa.array([], pa.binary())}), tmp_path / "empty.parquet")

    @flow
    def run(source: str):
        return featurize([source], tiny_config, str(tmp_path / "out"), tiny_run())

    from diffpath.features.shards import read_shards

    rows = pl.from_arrow(read_shards(run(str(tmp_path / "odd.parquet")).uris, tiny_config)[0])
    assert rows["path"].to_list() == ["a", "a", "odd.parquet#2", "odd.parquet#3"]
    assert rows["error"].is_null().to_list() == [True, True, False, False]
    assert rows["sha256"][0] == rows["sha256"][1]
    with pytest.raises(StorageError, match="no 'image' column"):
        run(str(tmp_path / "other-schema.parquet"))
    with pytest.raises(StorageError, match="holds no images"):
        run(str(tmp_path / "empty.parquet"))
