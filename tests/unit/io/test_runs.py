"""Dated output folders and the latest.json beside them."""

from __future__ import annotations


def test_dated_uris_and_the_latest_pointer(tmp_path) -> None:
    import json
    from datetime import datetime, timedelta, timezone

    from diffpath.io.runs import dated, point_latest

    when = datetime(2026, 11, 26, 2, 0, 5, tzinfo=timezone(timedelta(hours=1)))
    assert dated("s3://b/incoming/{date}/", when) == "s3://b/incoming/2026-11-26/"
    assert dated("out/{datetime}", when) == "out/2026-11-26T010005Z"
    template = str(tmp_path / "screen" / "{date}")
    uri = point_latest(template, dated(template, when), when)
    assert json.loads((tmp_path / "screen" / "latest.json").read_text())["out"].endswith(
        "screen/2026-11-26"
    ) and uri.endswith("latest.json")
    assert point_latest(str(tmp_path / "fixed"), str(tmp_path / "fixed"), when) is None
    backfill = when - timedelta(days=3)  # an older night rerun: latest stays the newest
    point_latest(template, dated(template, backfill), backfill)
    latest = json.loads((tmp_path / "screen" / "latest.json").read_text())
    assert latest["out"].endswith("2026-11-26")
    later = when + timedelta(days=1)
    point_latest(template, dated(template, later), later)
    assert json.loads((tmp_path / "screen" / "latest.json").read_text())["out"].endswith("11-27")
