"""Score a run's feature shards: screening against a reference, audit, evaluation."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task

from diffpath.config import FeatureConfig
from diffpath.io.storage import join, read_json
from diffpath.scoring import score
from diffpath.scoring.alerts import ScreenPolicy, flag_rule
from diffpath.scoring.nearcopy import protected_index
from diffpath.scoring.reference import load_reference
from diffpath_tasks.retry import RETRY, transient_failure


@task(**RETRY, retry_condition_fn=transient_failure)
def check_policy_task(reference_uri: str, policy: ScreenPolicy) -> float:
    """Fail before any feature work when `policy` cannot flag with this reference (an
    --fpr finer than its calibration set resolves); returns the threshold."""
    rule = flag_rule(load_reference(reference_uri), policy)
    get_run_logger().info(
        "flagging scores above %.6g: %.2f%% of in-distribution images (%d calibration scores)",
        rule.threshold,
        100 * rule.rate,
        rule.n,
    )
    return rule.threshold


@task(**RETRY, retry_condition_fn=transient_failure)
def protected_index_task(source: list[str], cache_root: str, out: str) -> str:
    """Index a protected set (perceptual hashes cached by content under `cache_root`) →
    `out`/protected.parquet."""
    index = protected_index(source, cache_root)
    get_run_logger().info(
        "protected set %s: %d images indexed, %d unreadable left out",
        source,
        len(index.images),
        index.n_unreadable,
    )
    return index.save(join(out, "protected.parquet"))


@task(**RETRY, retry_condition_fn=transient_failure)
def screen_task(
    shard_uris: list[str],
    reference_uri: str,
    out: str,
    started: float,
    sources: list[str],
    counts: dict[str, Any],
    policy: ScreenPolicy | None = None,
    protected_uri: str | None = None,
) -> dict[str, str]:
    """scores, errors, duplicates, flagged lists, leaks and summary of a screening run under
    `out` → their URIs."""
    outputs = score.screen(
        shard_uris, reference_uri, out, started, sources, policy, protected_uri, **counts
    )
    summary = read_json(outputs["summary"])
    get_run_logger().info(
        "screened %d images: %d flagged, %d unreadable, %d near duplicates",
        summary["n_images"],
        summary["n_flagged"],
        summary["n_errors"],
        summary["n_duplicates"],
    )
    return outputs


@task(**RETRY, retry_condition_fn=transient_failure)
def audit_task(
    shard_uris: list[str],
    config: FeatureConfig,
    out: str,
    density: str,
    folds: int,
    sources: list[str],
    counts: dict[str, Any],
    reference_uri: str | None = None,
    fdr: float = 0.1,
) -> dict[str, str]:
    """Scores of one set and its estimated contamination → its outputs under `out`."""
    return score.audit(
        shard_uris, config, out, density, folds, sources, reference_uri, fdr, **counts
    )


@task(**RETRY, retry_condition_fn=transient_failure)
def evaluate_task(
    in_dist: list[str], ood: dict[str, list[str]], reference_uri: str, out: str
) -> str:
    """AUROC, FPR@95, AUPR of each OOD set against the in-distribution set → metrics.json."""
    return score.evaluate(in_dist, ood, reference_uri, out)
