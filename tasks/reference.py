"""Fit an in-distribution reference from feature shards; read a reference's config."""

from __future__ import annotations

from prefect import get_run_logger, task

from diffpath.config import FeatureConfig
from diffpath.scoring.grouping import Grouping
from diffpath.scoring.reference import (
    check_split,
    fit_reference_shards,
    pin_reference,
    reference_setup,
)
from diffpath_tasks.retry import RETRY, transient_failure


@task(**RETRY, retry_condition_fn=transient_failure)
def fit_reference_task(
    shard_uris: list[str],
    config: FeatureConfig,
    out: str,
    density: str,
    target_fpr: float,
    holdout: float,
    grouping: Grouping | None = None,
    model: str = "default",
) -> str:
    """Fit density + threshold on the shards' features (of the weights at `model`);
    returns the reference JSON URI."""
    uri = fit_reference_shards(
        shard_uris, config, out, density, target_fpr, holdout, grouping, model
    )
    get_run_logger().info("reference fitted (%s, %.0f%% FPR) -> %s", density, 100 * target_fpr, uri)
    return uri


@task(**RETRY, retry_condition_fn=transient_failure)
def check_split_task(
    listing_uri: str, grouping: Grouping | None, holdout: float, seed: int, target_fpr: float
) -> int:
    """Fail in seconds, before any feature work, when the images cannot be grouped or too
    few would be held back to calibrate; returns the number held back."""
    n_cal, n_groups = check_split(listing_uri, grouping, holdout, seed, target_fpr)
    split = "a random split" if n_groups is None else f"{n_groups} groups by {grouping}"
    get_run_logger().info("%d reference images held back to calibrate (%s)", n_cal, split)
    return n_cal


@task(**RETRY, retry_condition_fn=transient_failure)
def pin_reference_task(reference_uri: str, out: str) -> str:
    """The run's own copy of the reference (`out`/reference.json), read once from its URI."""
    return pin_reference(reference_uri, out)


@task(**RETRY, retry_condition_fn=transient_failure)
def reference_setup_task(reference_uri: str, model: str | None) -> tuple[FeatureConfig, str]:
    """(the reference's feature config, where its weights are: `model` when given), the
    weights checked by fingerprint."""
    return reference_setup(reference_uri, model)
