"""When a screening run needs a person: the flagging rule and the alert reasons.

A run flags images above a threshold: the reference's, or one chosen at screening time
from the reference's calibration scores (`fpr`) or given outright (`threshold`). Its
summary compares the number flagged with the number expected of in-distribution images
(the Beta-Binomial law of `diffpath.scoring.conformal`) and lists the reasons to alert: nothing
could be scored, too many unreadable images (`max_errors`), more flagged than chance
explains (`alert_p`), more than a fixed fraction flagged (`fail_above`), images that are near
copies of a protected set (`--leak-check`: always).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from diffpath.scoring.conformal import FlagRule, calibrate_threshold, threshold_rule
from diffpath.scoring.nearcopy import NEAR_BITS
from diffpath.scoring.reference import Reference

__all__ = ["ScreenPolicy", "alert_reasons", "flag_rule"]


class ScreenPolicy(BaseModel):
    """How a screening run flags images and when it alerts (none of it changes a score)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    fpr: float | None = Field(
        None, gt=0, lt=1, description="flag at this in-distribution rate (default: the reference's)"
    )
    threshold: float | None = Field(
        None, allow_inf_nan=False, description="flag scores above this value instead"
    )
    alert_p: float | None = Field(
        None, gt=0, lt=1, description="alert when the flagged count has p-value at most this"
    )
    alert_per: Literal["night", "reference"] = Field(
        "night",
        description="what --alert-p holds for: at most P of clean nights (night), or every "
        "clean night for 99% of references (reference: a deployment keeping one reference)",
    )
    fail_above: float | None = Field(
        None, ge=0, le=1, description="alert when more than this fraction is flagged"
    )
    max_errors: float | None = Field(
        None, ge=0, le=1, description="alert when more than this fraction is unreadable"
    )
    near_bits: int = Field(
        NEAR_BITS,
        ge=0,
        le=7,
        description="near copies (duplicates, leaks) differ in at most this many of 64 "
        "perceptual-hash bits: 2 finds re-encoded, resized, brightness-shifted copies, 6 also "
        "more lightly cropped ones (8x the search), 0 only equal hashes (docs/nearcopy.md)",
    )

    @model_validator(mode="after")
    def _one_threshold(self) -> ScreenPolicy:
        if self.fpr is not None and self.threshold is not None:
            raise ValueError("give fpr (--fpr) or threshold (--threshold), not both")
        return self

    @property
    def threshold_from(self) -> str:
        """Where the threshold comes from: "threshold", "fpr" or "reference"."""
        if self.threshold is not None:
            return "threshold"
        return "reference" if self.fpr is None else "fpr"


def flag_rule(reference: Reference, policy: ScreenPolicy) -> FlagRule:
    """The threshold a run flags above, placed among the reference's calibration scores."""
    calibration = reference.calibration_scores
    if policy.threshold is not None:
        threshold = policy.threshold
    elif policy.fpr is not None:
        threshold = calibrate_threshold(calibration, policy.fpr)
    else:
        threshold = reference.threshold
    return threshold_rule(calibration, threshold)


def alert_reasons(summary: dict[str, Any], policy: ScreenPolicy) -> list[str]:
    """Why this run needs a person, from its summary; empty when it does not."""
    reasons = []
    if summary["n_images"] == 0:
        reasons.append("the sources hold no images: check that tonight's dump arrived")
    elif summary["n_scored"] == 0:
        reasons.append(f"no image could be scored ({summary['n_errors']} unreadable)")
    errors = summary["error_fraction"]
    if policy.max_errors is not None and errors > policy.max_errors:
        reasons.append(f"{100 * errors:.1f}% unreadable, above --max-errors {policy.max_errors}")
    p = summary["flagged_p_value"]
    if policy.alert_p is not None and p is not None and p <= policy.alert_p:
        low, high = summary["expected_flagged_range"]
        reasons.append(
            f"{summary['n_flagged']:,} flagged where in-distribution images give "
            f"{low:,}–{high:,} (95%): p = {p:.2g}, at most --alert-p {policy.alert_p}"
        )
    if leaks := summary.get("n_leaks"):
        sources = ", ".join(summary["leak_check"]["sources"])
        reasons.append(
            f"{leaks:,} images are near copies of the protected set {sources}: see leaks.parquet"
        )
    flagged = summary["flagged_fraction"]
    if policy.fail_above is not None and flagged > policy.fail_above:
        reasons.append(f"{100 * flagged:.1f}% flagged, above --fail-above {policy.fail_above}")
    return reasons
