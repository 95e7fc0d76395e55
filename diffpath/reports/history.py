"""A screen's nights side by side: `history.parquet` beside its dated folders.

Rebuilt after each night from every dated folder's `summary.json` (a summary is written
last, so it marks a complete night): a rerun replaces its night's row, two nights that run
at once both appear, and nothing is appended in place.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import polars as pl

from diffpath.io.runs import latest_pointer
from diffpath.io.storage import glob, join, read_many, write_parquet
from diffpath.reports.render import trend_png

__all__ = ["history_uri", "night_row", "trend", "write_history"]

SCORE_QUANTILES = ("0.5", "0.95", "0.99")

log = logging.getLogger(__name__)


def history_uri(template: str) -> str | None:
    """`history.parquet` beside `latest.json` of a dated output URI; None for an undated one."""
    pointer = latest_pointer(template)
    return None if pointer is None else join(pointer.rsplit("/", 1)[0], "history.parquet")


def night_row(folder: str, summary: dict[str, Any]) -> dict[str, Any]:
    """One night of a screen: counts, the flagged fraction with its expected 95% range,
    score quantiles and alerts."""
    n = summary["n_scored"]
    low, high = summary.get("expected_flagged_range") or (None, None)
    quantiles = summary.get("score_quantiles") or {}
    return {
        "folder": folder,
        "started_at": summary.get("started_at"),
        "n_images": summary["n_images"],
        "n_scored": n,
        "n_errors": summary["n_errors"],
        "n_flagged": summary["n_flagged"],
        "flagged_fraction": summary["flagged_fraction"],
        "expected_fraction": summary.get("expected_flagged_fraction"),
        "expected_low": None if low is None or not n else low / n,
        "expected_high": None if high is None or not n else high / n,
        "flagged_p_value": summary.get("flagged_p_value"),
        **{f"score_q{q}": quantiles.get(q) for q in SCORE_QUANTILES},
        "n_alerts": len(summary.get("alerts") or []),
        "alerts": "; ".join(summary.get("alerts") or []),
    }


def write_history(template: str) -> str | None:
    """Rebuild `history.parquet` from the summaries of every screen night written under a
    dated output URI (ordered by start time); None for an undated one."""
    uri = history_uri(template)
    if uri is None:
        return None
    pattern = join(template.replace("{datetime}", "*").replace("{date}", "*"), "summary.json")
    rows = []
    for summary_uri, data in read_many(glob(pattern)).items():
        try:
            row = night_row(summary_uri.rsplit("/", 1)[0], json.loads(data))
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            log.warning(
                "%s is not a readable screen summary (%r): its night is left out of "
                "history.parquet; rerun that night or remove its folder",
                summary_uri,
                err,
            )
            continue
        if row["expected_fraction"] is not None:  # screens, not audits
            rows.append(row)
    if not rows:
        return None
    history = pl.DataFrame(rows, infer_schema_length=None).sort("started_at", "folder")
    return write_parquet(history.to_arrow(), uri)


def trend(history: pl.DataFrame, nights: int = 60) -> bytes:
    """The trend plot of the last `nights` rows of a history."""
    last = history.tail(nights)
    return trend_png(
        [folder.rsplit("/", 1)[-1] for folder in last["folder"]],
        last["flagged_fraction"].to_numpy(),
        (last["expected_low"].to_numpy(), last["expected_high"].to_numpy()),
        last["n_alerts"].to_numpy() > 0,
        {f"{float(q):.0%} quantile": last[f"score_q{q}"].to_numpy() for q in SCORE_QUANTILES},
    )
