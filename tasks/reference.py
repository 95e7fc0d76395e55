"""Fit an in-distribution reference from feature shards."""

from __future__ import annotations

from prefect import get_run_logger, task

from diffpath.config import FeatureConfig
from diffpath.featurestore import feature_matrix, read_features
from diffpath.reference import fit_reference, load_reference, save_reference
from diffpath.storage import join
from tasks.retry import is_transient


@task
def fit_reference_task(
    shard_uris: list[str],
    config: FeatureConfig,
    out: str,
    density: str = "auto",
    target_fpr: float = 0.05,
    holdout: float = 0.2,
    seed: int = 0,
) -> str:
    """Fit density + threshold on the shards' features; returns the reference JSON URI."""
    frame, model_id = read_features(shard_uris, config.config_hash())
    _, features = feature_matrix(frame, config)
    reference = fit_reference(features, config, model_id, density, target_fpr, holdout, seed)
    uri = save_reference(reference, join(out, "reference.json"))
    get_run_logger().info(
        "reference fitted on %d images (%s, threshold %.4g at %.0f%% FPR) -> %s",
        reference.n_fit,
        density,
        reference.threshold,
        100 * target_fpr,
        uri,
    )
    return uri


@task(retries=2, retry_delay_seconds=2, retry_condition_fn=is_transient)
def reference_config(reference_uri: str) -> FeatureConfig:
    """The feature config a stored reference was fitted with."""
    return load_reference(reference_uri).config
