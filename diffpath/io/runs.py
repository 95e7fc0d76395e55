"""A run's output folder: `{date}`/`{datetime}` in a URI filled in at the run's time, and
`latest.json` beside the dated folders pointing at the newest run."""

from __future__ import annotations

from datetime import datetime, timezone

from diffpath.io.storage import exists, join, read_json, write_json

__all__ = ["dated", "latest_pointer", "point_latest"]


def dated(uri: str, when: datetime) -> str:
    """`uri` with `{date}` (YYYY-MM-DD) and `{datetime}` (YYYY-MM-DDTHHMMSSZ) of `when`
    (in UTC) filled in: scheduled runs read their night's dump and write side by side."""
    moment = when.astimezone(timezone.utc)
    return uri.replace("{date}", f"{moment:%Y-%m-%d}").replace(
        "{datetime}", f"{moment:%Y-%m-%dT%H%M%SZ}"
    )


def latest_pointer(template: str) -> str | None:
    """The `latest.json` beside the dated folders of an output URI with a date
    placeholder; None for an undated one."""
    if "{date" not in template:
        return None
    return join(template[: template.index("{")].rsplit("/", 1)[0], "latest.json")


def point_latest(template: str, resolved: str, when: datetime) -> str | None:
    """For an output URI with a date placeholder, point `latest.json` beside the dated
    folders at the newest run time ({"out": resolved, "run_time": …}): a backfill of an
    older night leaves it where it is. Returns its URI; an undated `out` has none."""
    pointer = latest_pointer(template)
    if pointer is None:
        return None
    moment = when.astimezone(timezone.utc)
    if exists(pointer):
        newest = datetime.fromisoformat(read_json(pointer)["run_time"])
        if newest > moment:
            return pointer
    return write_json({"out": resolved, "run_time": moment.isoformat()}, pointer)
