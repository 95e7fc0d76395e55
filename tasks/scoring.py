"""Score feature shards: screening against a reference, audit by cross-fitting, evaluation."""

from __future__ import annotations

import io
import json
import time

import polars as pl
from prefect import get_run_logger, task

from diffpath.config import FeatureConfig
from diffpath.featurestore import read_features
from diffpath.metrics import ood_metrics, roc
from diffpath.reference import load_reference
from diffpath.scoring import audit_table, errors_table, screen_table, summarize
from diffpath.storage import join, write_bytes


def write_parquet(frame: pl.DataFrame, uri: str) -> str:
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return write_bytes(uri, buffer.getvalue())


def write_json(data: dict, uri: str) -> str:
    return write_bytes(uri, json.dumps(data, indent=2).encode())


def write_outputs(
    out: str, scores: pl.DataFrame, errors: pl.DataFrame, summary: dict
) -> dict[str, str]:
    """scores.parquet, errors.parquet and summary.json under `out` → their URIs."""
    return {
        "scores": write_parquet(scores, join(out, "scores.parquet")),
        "errors": write_parquet(errors, join(out, "errors.parquet")),
        "summary": write_json(summary, join(out, "summary.json")),
    }


@task
def screen_shards(
    shard_uris: list[str], reference_uri: str, config: FeatureConfig, out: str, started: float
) -> dict[str, str]:
    """Write scores.parquet, errors.parquet and summary.json under `out`; returns their URIs."""
    reference = load_reference(reference_uri, config.config_hash())
    features, model_id = read_features(shard_uris, config.config_hash())
    scores, errors = screen_table(reference, features, model_id)
    summary = summarize(
        scores,
        len(errors),
        threshold=reference.threshold,
        target_fpr=reference.target_fpr,
        config_hash=config.config_hash(),
        model_id=model_id,
        reference=reference_uri,
        wall_seconds=time.time() - started,
    )
    get_run_logger().info(
        "screened %d images: %d flagged, %d unreadable",
        summary["n_images"],
        summary["n_flagged"],
        len(errors),
    )
    return write_outputs(out, scores, errors, summary)


@task
def audit_shards(
    shard_uris: list[str], config: FeatureConfig, out: str, density: str, folds: int, seed: int
) -> dict[str, str]:
    """Cross-fitted scores of one set → scores.parquet, errors.parquet, summary.json."""
    features, model_id = read_features(shard_uris, config.config_hash())
    scores, contamination = audit_table(features, config, density, folds, seed)
    errors = errors_table(features)
    summary = summarize(
        scores,
        len(errors),
        estimated_contamination=contamination,
        folds=folds,
        density=density,
        config_hash=config.config_hash(),
        model_id=model_id,
    )
    return write_outputs(out, scores, errors, summary)


@task
def evaluate_shards(
    in_dist: list[str],
    ood: dict[str, list[str]],
    reference_uri: str,
    config: FeatureConfig,
    out: str,
) -> str:
    """AUROC, FPR@95, AUPR-in/out of each OOD set against the in-distribution set → metrics.json."""
    reference = load_reference(reference_uri, config.config_hash())

    def scores_of(uris: list[str]):
        frame, model_id = read_features(uris, config.config_hash())
        return screen_table(reference, frame, model_id)[0]["score"].to_numpy()

    id_scores = scores_of(in_dist)
    results = {"in_dist": {"n": len(id_scores), "scores": id_scores.tolist()}, "ood": {}}
    for name, uris in ood.items():
        ood_scores = scores_of(uris)
        fpr, tpr = roc(id_scores, ood_scores)
        results["ood"][name] = {
            "n": len(ood_scores),
            **ood_metrics(id_scores, ood_scores),
            "scores": ood_scores.tolist(),
            "roc": {"fpr": fpr.tolist(), "tpr": tpr.tolist()},
        }
        get_run_logger().info("%s: AUROC %.4f", name, results["ood"][name]["auroc"])
    return write_json(results, join(out, "metrics.json"))
