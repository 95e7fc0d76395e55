"""An earlier run's results: where they are, and which test AUROCs dropped by more than
the tolerance and the current interval allow."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from diffpath.errors import ConfigError
from diffpath.io.runs import latest_pointer
from diffpath.io.storage import exists, join, read_json

LATEST = "latest"


def previous_results(previous: str | None, template: str) -> str | None:
    """`previous` as a results.parquet URI: a folder holds one; "latest" is the run that
    latest.json beside a dated `out` points at (none yet: no comparison). Checked before
    any work: a previous run that is not there is a mistake, not a pass."""
    if previous is None:
        return None
    if previous == LATEST:
        pointer = latest_pointer(template)
        if pointer is None:
            raise ConfigError("--previous latest needs a dated --out (with {date})")
        return join(read_json(pointer)["out"], "results.parquet") if exists(pointer) else None
    uri = previous if previous.endswith(".parquet") else join(previous, "results.parquet")
    if not exists(uri):
        raise ConfigError(f"previous results {uri} do not exist; give a benchmark's output")
    return uri


def compare(
    rows: Sequence[Mapping[str, Any]], previous: Sequence[Mapping[str, Any]], tolerance: float
) -> tuple[list[dict[str, Any]], list[str]]:
    """Test-split AUROC deltas against a previous run's rows → (deltas, regressions): a drop
    larger than `tolerance` and than the current interval's upper half is a regression."""
    before = {(r["in_dist"], r["ood"], r["method"]): r for r in previous if r["split"] == "test"}
    deltas, regressions = [], []
    for row in rows:
        key = (row["in_dist"], row["ood"], row["method"])
        if row["split"] != "test" or key not in before:
            continue
        old, new = before[key]["auroc"], row["auroc"]
        allowed = max(tolerance, row["auroc_high"] - new)
        regressed = old - new > allowed
        deltas.append(
            {
                "in_dist": key[0],
                "ood": key[1],
                "method": key[2],
                "previous": old,
                "auroc": new,
                "delta": new - old,
                "allowed_drop": allowed,
                "regression": regressed,
            }
        )
        if regressed:
            regressions.append(
                f"{key[2]}: {key[0]} vs {key[1]} AUROC {old:.3f} -> {new:.3f} "
                f"(drop {old - new:.3f} > allowed {allowed:.3f})"
            )
    return deltas, regressions
