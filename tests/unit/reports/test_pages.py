"""The screening report's pages: error maps carry the names of their own images."""

from __future__ import annotations

import numpy as np
import polars as pl
from PIL import Image

from diffpath.io.images import decode_image
from diffpath.reports import pages
from diffpath.reports.render import pixels


def test_error_maps_keep_their_names_when_an_image_fails_to_read(
    tmp_path, tiny_model, tiny_config, monkeypatch
) -> None:
    """An image that vanished between screening and the report drops out; every later map
    still carries its own image's name."""
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        noise = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(noise).save(tmp_path / f"{name}.png")
    scores = pl.DataFrame(
        {
            "uri": [str(tmp_path / f"{n}.png") for n in ("a", "gone", "c")],
            "row": [None, None, None],
            "path": ["a.png", "gone.png", "c.png"],
        },
        schema_overrides={"row": pl.Int64},
    )
    shown = {}
    monkeypatch.setattr(pages, "error_maps_png", lambda rows, **_: shown.setdefault("rows", rows))
    pages.why_png(scores, tiny_model, tiny_config)
    names = [name for name, *_ in shown["rows"]]
    assert names == ["a.png", "c.png"]
    c = decode_image((tmp_path / "c.png").read_bytes(), "c.png", **tiny_config.geometry)
    np.testing.assert_array_equal(shown["rows"][1][1], pixels(c))  # c's map shows c
