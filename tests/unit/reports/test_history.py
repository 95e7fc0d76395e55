"""history.parquet: one row per screened night, rebuilt from the dated folders' summaries."""

from __future__ import annotations

import json
import logging

import polars as pl
import pytest

from diffpath.reports.history import history_uri, trend, write_history


def _night(root, day: str, n_flagged: int, **extra) -> None:
    folder = root / day
    folder.mkdir(parents=True, exist_ok=True)
    summary = {
        "started_at": f"{day}T02:00:00+00:00",
        "n_images": 1000,
        "n_scored": 990,
        "n_errors": 10,
        "n_flagged": n_flagged,
        "flagged_fraction": n_flagged / 990,
        "expected_flagged_fraction": 0.0495,
        "expected_flagged_range": [36, 63],
        "flagged_p_value": 0.5,
        "score_quantiles": {"0.5": 10.0, "0.95": 20.0, "0.99": 30.0},
        "alerts": ["too many"] if n_flagged > 63 else [],
        **extra,
    }
    (folder / "summary.json").write_text(json.dumps(summary))


@pytest.mark.hostile(
    ("a night's `summary.json` cut off", "left out of history.parquet with a warning")
)
def test_history_has_one_row_per_night_in_time_order_and_reruns_replace_theirs(
    tmp_path, caplog
) -> None:
    template = str(tmp_path / "screen" / "{date}")
    assert history_uri(str(tmp_path / "undated")) is None and write_history(str(tmp_path)) is None
    for day, flagged in (("2026-11-30", 50), ("2026-11-28", 40), ("2026-11-29", 90)):
        _night(tmp_path / "screen", day, flagged)
    (tmp_path / "screen" / "2026-11-27").mkdir()  # a night that never finished: no summary
    (tmp_path / "screen" / "2026-11-26").mkdir()
    (tmp_path / "screen" / "2026-11-26" / "summary.json").write_text('{"n_images": 3')  # cut off
    with caplog.at_level(logging.WARNING, logger="diffpath.reports.history"):
        uri = write_history(template)
    assert "2026-11-26/summary.json is not a readable screen summary" in caplog.text
    assert uri == str(tmp_path / "screen" / "history.parquet")
    history = pl.read_parquet(uri)
    assert history["n_flagged"].to_list() == [40, 90, 50]
    assert history["n_alerts"].to_list() == [0, 1, 0] and history["alerts"][1] == "too many"
    assert history["expected_low"][0] == 36 / 990 and history["score_q0.99"][0] == 30.0
    _night(tmp_path / "screen", "2026-11-29", 45)  # the night is rerun
    history = pl.read_parquet(write_history(template))
    assert history["n_flagged"].to_list() == [40, 45, 50]
    assert trend(history).startswith(b"\x89PNG")
