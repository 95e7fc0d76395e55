"""Per-image tables: ranks, errors, duplicate groups and summaries."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from diffpath.config import FeatureConfig
from diffpath.errors import ConfigMismatchError
from diffpath.scoring.nearcopy import duplicate_groups
from diffpath.scoring.reference import (
    fit_reference,
)
from diffpath.scoring.score import errors_table, flagged_table, screen_table, summarize


def features_frame() -> pl.DataFrame:
    """Five listed images: two files with the same bytes, a Parquet row duplicate, one failure;
    perceptual hashes: the copies' equal, the other image's 40 bits away."""
    rng = np.random.default_rng(0)
    values = rng.normal(size=(5, 6))
    values[4] = np.nan
    frame = pl.DataFrame(
        {
            "uri": ["d1/a.jpg", "d2/a.jpg", "s.parquet", "s.parquet", "d1/bad.jpg"],
            "row": [None, None, 0, 1, None],
            "path": ["a.jpg", "a.jpg", "k", "k", "bad.jpg"],
            "sha256": ["h1", "h1", "h2", "h1", "h3"],
            "phash": [7, 7, 2**40 - 1, 7, None],
        },
        schema_overrides={"row": pl.Int64, "phash": pl.UInt64},
    )
    names = ["err_l1", "err_l2", "err_l3", "deriv_l1", "deriv_l2", "deriv_l3"]
    columns = {n: pl.Series(n, values[:, j]).fill_nan(None) for j, n in enumerate(names)}
    errors = pl.Series("error", [None, None, None, None, "cannot decode image 'd1/bad.jpg'"])
    return frame.with_columns(**columns, error=errors)


def test_duplicate_groups_and_errors_keep_every_locator() -> None:
    frame = features_frame()
    duplicates = duplicate_groups(frame)
    assert duplicates.select("group", "uri", "row", "distance", "identical").to_dicts() == [
        {"group": 1, "uri": u, "row": r, "distance": 0, "identical": True}
        for u, r in [("d1/a.jpg", None), ("d2/a.jpg", None), ("s.parquet", 1)]
    ]
    errors = errors_table(frame)
    assert errors.columns == ["uri", "row", "path", "sha256", "error"]
    assert errors["uri"].to_list() == ["d1/bad.jpg"]


def test_screen_table_ranks_every_readable_row_and_refuses_other_models() -> None:
    frame = features_frame()
    rng = np.random.default_rng(1)
    config = FeatureConfig(method="diffpathv2")
    reference = fit_reference(rng.normal(size=(100, 6)), config, "m1")
    scores, errors = screen_table(reference, frame.to_arrow(), "m1"), errors_table(frame)
    assert len(scores) == 4 and len(errors) == 1
    assert scores["rank"].to_list() == [1, 2, 3, 4] and scores["score"].is_sorted(descending=True)
    by_uri = {(r["uri"], r["row"]): r["score"] for r in scores.iter_rows(named=True)}
    assert by_uri[("s.parquet", 0)] != by_uri[("s.parquet", 1)]  # same path, other rows
    summary = summarize(scores, errors, duplicate_groups(frame))
    assert (summary["n_images"], summary["n_scored"], summary["n_errors"]) == (5, 4, 1)
    assert (summary["n_duplicate_groups"], summary["n_duplicates"]) == (1, 2)
    assert summary["n_identical_duplicates"] == 2
    flagged = flagged_table(scores.with_columns(flagged=pl.col("rank") <= 2))
    assert flagged["rank"].to_list() == [1, 2] and "flagged" not in flagged.columns
    assert all(
        loc == (u if r is None else f"{u}#{r}")
        for loc, u, r in zip(flagged["locator"], flagged["uri"], flagged["row"], strict=True)
    )
    with pytest.raises(ConfigMismatchError):
        screen_table(reference, frame.to_arrow(), "m2")
