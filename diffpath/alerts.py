"""When a screening run needs a person: the flagging rule and the alert reasons.

A run flags images above a threshold: the reference's, or one chosen at screening time
from the reference's calibration scores (`fpr`) or given outright (`threshold`). Its
summary compares the flagged fraction with the fraction expected of in-distribution
images (one-sided binomial test) and lists the reasons to alert: nothing could be scored,
too many unreadable images (`max_errors`), too many flagged (`fail_above`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy.stats import binom

from diffpath.metrics import calibrate_threshold
from diffpath.reference import Reference

__all__ = ["ScreenPolicy", "alert_reasons", "flag_threshold", "flagged_p_value"]


class ScreenPolicy(BaseModel):
    """How a screening run flags images and when it alerts (none of it changes a score)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    fpr: float | None = Field(
        None, gt=0, lt=1, description="flag at this in-distribution rate (default: the reference's)"
    )
    threshold: float | None = Field(
        None, allow_inf_nan=False, description="flag scores above this value instead"
    )
    fail_above: float | None = Field(
        None, ge=0, le=1, description="alert when more than this fraction is flagged"
    )
    max_errors: float | None = Field(
        None, ge=0, le=1, description="alert when more than this fraction is unreadable"
    )


def flag_threshold(reference: Reference, policy: ScreenPolicy) -> tuple[float, float]:
    """(threshold, fraction of in-distribution images expected above it)."""
    calibration = reference.calibration_scores
    if policy.threshold is not None:
        return policy.threshold, float(np.mean(calibration > policy.threshold))
    if policy.fpr is not None:
        return calibrate_threshold(calibration, policy.fpr), policy.fpr
    return reference.threshold, reference.target_fpr


def flagged_p_value(n_flagged: int, n_scored: int, expected: float) -> float | None:
    """P(≥ n_flagged of n_scored flagged | each in-distribution image is flagged with
    probability `expected`): small when a dump holds more outliers than chance explains."""
    if n_scored == 0:
        return None
    return float(binom.sf(n_flagged - 1, n_scored, expected))


def alert_reasons(summary: dict[str, Any], policy: ScreenPolicy) -> list[str]:
    """Why this run needs a person, from its summary; empty when it does not."""
    reasons = []
    if summary["n_scored"] == 0:
        reasons.append(f"no image could be scored ({summary['n_errors']} unreadable)")
    errors = summary["error_fraction"]
    if policy.max_errors is not None and errors > policy.max_errors:
        reasons.append(f"{100 * errors:.1f}% unreadable, above --max-errors {policy.max_errors}")
    flagged = summary["flagged_fraction"]
    if policy.fail_above is not None and flagged > policy.fail_above:
        p = summary["flagged_p_value"]
        chance = "" if p is None or math.isnan(p) else f" (p = {p:.2g} under the expected rate)"
        reasons.append(
            f"{100 * flagged:.1f}% flagged, above --fail-above {policy.fail_above}{chance}"
        )
    return reasons
