"""Turn a run's feature shards into per-image scores, flags, ranks and summaries.

Every per-image table starts with the locator columns ``uri, row, path, sha256``: one row
per listed image, never merged, so users join on (uri, row). The table builders are pure;
`screen`, `audit` and `evaluate` read shards and write a run's outputs under `out`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from importlib.metadata import version
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from diffpath.config import FeatureConfig
from diffpath.features.shards import LOCATOR, empty_frame, feature_matrix, read_shards
from diffpath.io.storage import join, remove, write_bytes, write_json, write_parquet
from diffpath.scoring.alerts import ScreenPolicy, alert_reasons, flag_rule
from diffpath.scoring.conformal import conformal_p_values
from diffpath.scoring.contamination import FDR, Estimate, audit_scores
from diffpath.scoring.metrics import auroc_interval, ood_metrics, roc
from diffpath.scoring.nearcopy import ProtectedIndex, duplicate_groups, leak_matches
from diffpath.scoring.reference import Reference, load_reference

__all__ = [
    "audit",
    "audit_table",
    "errors_table",
    "evaluate",
    "flagged_table",
    "score_table",
    "screen",
    "screen_table",
    "summarize",
]

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


def score_table(
    rows: pa.Table,
    scores: np.ndarray,
    flagged: np.ndarray,
    p_values: np.ndarray | None = None,
) -> pl.DataFrame:
    """Locator columns of `rows` + (score, [p_value], flagged, rank), sorted by rank
    (1 = most anomalous)."""
    order = np.argsort(-scores, kind="stable")
    rank = np.empty(len(scores), dtype=np.int64)
    rank[order] = np.arange(1, len(scores) + 1)
    results = pl.DataFrame({"score": pl.Series(scores, dtype=pl.Float64)})
    if p_values is not None:
        results = results.with_columns(p_value=pl.Series(p_values, dtype=pl.Float64))
    results = results.with_columns(
        flagged=pl.Series(flagged, dtype=pl.Boolean), rank=pl.Series(rank, dtype=pl.Int64)
    )
    locators = pl.from_arrow(rows.select(LOCATOR))
    return pl.concat([locators, results], how="horizontal").sort("rank")


def errors_table(features: pl.DataFrame) -> pl.DataFrame:
    """Locator + error of the images that could not be read or decoded."""
    return features.filter(pl.col("error").is_not_null()).select(*LOCATOR, "error")


def summarize(
    scores: pl.DataFrame, errors: pl.DataFrame, duplicates: pl.DataFrame, **extra: Any
) -> dict[str, Any]:
    """Counts (n_images = n_scored + n_errors), flagged fraction, near-duplicate groups,
    score quantiles."""
    values = scores["score"].to_numpy()
    quantiles = np.quantile(values, QUANTILES) if len(values) else [None] * len(QUANTILES)
    n_flagged = int(scores["flagged"].sum())
    n_images = len(scores) + len(errors)
    return {
        "n_images": n_images,
        "n_scored": len(scores),
        "n_errors": len(errors),
        "error_fraction": len(errors) / max(1, n_images),
        "n_flagged": n_flagged,
        "flagged_fraction": n_flagged / max(1, len(scores)),
        "n_duplicate_groups": duplicates["group"].n_unique(),
        "n_duplicates": len(duplicates) - duplicates["group"].n_unique(),
        "n_identical_duplicates": len(duplicates) - duplicates["sha256"].n_unique(),
        "score_quantiles": {
            str(q): None if v is None else float(v)
            for q, v in zip(QUANTILES, quantiles, strict=True)
        },
        "flagged_by_folder": flagged_by_folder(scores),
        "diffpath": version("diffpath"),
        **extra,
    }


def flagged_by_folder(scores: pl.DataFrame) -> list[dict[str, Any]]:
    """Flag counts per top-level folder of the images' paths, most flagged first (empty
    when all share one): where in a dump the flags come from."""
    folders = scores.select(
        pl.col("path").str.split("/").list.first().alias("folder"),
        pl.col("path").str.contains("/").alias("nested"),
        "flagged",
    ).with_columns(
        pl.when("nested").then("folder").otherwise(pl.lit("(top level)")).alias("folder")
    )
    counts = folders.group_by("folder").agg(
        pl.len().alias("n"), pl.col("flagged").sum().alias("n_flagged")
    )
    if len(counts) < 2:
        return []
    return counts.sort(["n_flagged", "folder"], descending=[True, False]).to_dicts()


def screen_table(
    reference: Reference, shards: pa.Table, model_id: str, threshold: float | None = None
) -> pl.DataFrame:
    """Score a run's feature rows against a reference → scores with conformal p-values;
    flags scores above `threshold` (default: the reference's); refuses another model's
    features."""
    reference.check_model(model_id)
    rows, matrix = feature_matrix(shards, reference.config)
    scores = reference.anomaly_score(matrix) if len(rows) else np.empty(0)
    flagged = scores > (reference.threshold if threshold is None else threshold)
    p_values = conformal_p_values(scores, reference.calibration_scores)
    return score_table(rows, scores, flagged, p_values)


def audit_table(
    shards: pa.Table,
    config: FeatureConfig,
    density: str,
    folds: int,
    seed: int,
    reference: Reference | None = None,
    fdr: float = FDR,
) -> tuple[pl.DataFrame, Estimate]:
    """Scores of a set with unknown contamination → (scores, the contamination estimate):
    against a trusted `reference` (conformal p-values, Storey's estimate, suspects by
    Benjamini–Hochberg at `fdr`) when given, else out-of-fold (trimmed cross-fitting, a
    two-component mixture; suspects the estimated number of highest scores)."""
    rows, matrix = feature_matrix(shards, config)
    scores, p_values, estimate = audit_scores(
        matrix, config.method, density, folds, seed, reference, fdr
    )
    return score_table(rows, scores, estimate.suspects, p_values), estimate


def flagged_table(scores: pl.DataFrame) -> pl.DataFrame:
    """The flagged rows, most anomalous first, with `locator` (`uri`, or `uri#row` of a
    Parquet row): what flagged.csv holds and flagged.txt lists."""
    flagged = scores.filter("flagged").drop("flagged")
    locator = pl.when(pl.col("row").is_null()).then(pl.col("uri"))
    locator = locator.otherwise(pl.format("{}#{}", "uri", "row"))
    return flagged.select(locator.alias("locator"), pl.all())


def _write_outputs(
    out: str,
    scores: pl.DataFrame,
    errors: pl.DataFrame,
    duplicates: pl.DataFrame,
    summary: dict[str, Any],
    leaks: pl.DataFrame | None = None,
) -> dict[str, str]:
    """scores.parquet, errors.parquet, duplicates.parquet, flagged.txt and flagged.csv
    (the flagged images, for `xargs`, `aws s3 cp`, spreadsheets), leaks.parquet (with a
    protected set) and summary.json → their URIs.

    The previous run's summary and report go first and the summary is written last, so a
    summary.json beside the tables says they are one complete run's."""
    for stale in ("summary.json", "report.html", "leaks.parquet"):
        remove(join(out, stale))
    flagged = flagged_table(scores)
    lines = "".join(f"{locator}\n" for locator in flagged["locator"])
    outputs = {
        "scores": write_parquet(scores.to_arrow(), join(out, "scores.parquet")),
        "errors": write_parquet(errors.to_arrow(), join(out, "errors.parquet")),
        "duplicates": write_parquet(duplicates.to_arrow(), join(out, "duplicates.parquet")),
        "flagged_txt": write_bytes(join(out, "flagged.txt"), lines.encode()),
        "flagged_csv": write_bytes(join(out, "flagged.csv"), flagged.write_csv().encode()),
    }
    if leaks is not None:
        outputs["leaks"] = write_parquet(leaks.to_arrow(), join(out, "leaks.parquet"))
    return outputs | {"summary": write_json(summary, join(out, "summary.json"))}


def screen(
    shard_uris: Sequence[str],
    reference_uri: str,
    out: str,
    started: float,
    sources: list[str],
    policy: ScreenPolicy | None = None,
    protected_uri: str | None = None,
    **extra: Any,
) -> dict[str, str]:
    """Score a run's shards against a reference and write its outputs under `out`; the
    summary holds the alert reasons of `policy` and `extra` fields. With `protected_uri`
    (a `ProtectedIndex`) the images that are near copies of it go to leaks.parquet."""
    policy = policy or ScreenPolicy()
    reference = load_reference(reference_uri)
    shards, model_id = (
        read_shards(shard_uris, reference.config)
        if shard_uris
        else (empty_frame(reference.config), reference.model_id)  # a night with no image
    )
    features = pl.from_arrow(shards)
    rule = flag_rule(reference, policy)
    scores = screen_table(reference, shards, model_id, rule.threshold)
    errors, duplicates = errors_table(features), duplicate_groups(features, policy.near_bits)
    leaks, protected = None, None
    if protected_uri is not None:
        protected = ProtectedIndex.load(protected_uri)
        leaks = leak_matches(features, protected, policy.near_bits)
    summary = summarize(
        scores,
        errors,
        duplicates,
        started_at=datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds"),
        wall_seconds=time.time() - started,
        sources=sources,
        reference=reference_uri,
        reference_checksum=reference.checksum,
        config_hash=reference.config.config_hash(),
        model_id=model_id,
        threshold=rule.threshold,
        threshold_from=policy.threshold_from,
        expected_flagged_fraction=rule.rate,
        n_calibration=rule.n,
        calibration_split=reference.split,
        near_bits=policy.near_bits,
        **extra,
    )
    summary["warnings"] = reference.warnings
    if protected is not None and leaks is not None:
        summary["leak_check"] = protected.describe()
        summary["n_leaks"] = len(leaks)
    mean, low, high = rule.expected(summary["n_scored"])
    summary["expected_flagged"], summary["expected_flagged_range"] = mean, [low, high]
    summary["flagged_p_value"] = (
        rule.p_value(summary["n_flagged"], summary["n_scored"], policy.alert_per)
        if summary["n_scored"]
        else None
    )
    summary["alerts"] = alert_reasons(summary, policy)
    return _write_outputs(out, scores, errors, duplicates, summary, leaks)


def audit(
    shard_uris: Sequence[str],
    config: FeatureConfig,
    out: str,
    density: str,
    folds: int,
    sources: list[str],
    reference_uri: str | None = None,
    fdr: float = FDR,
    **extra: Any,
) -> dict[str, str]:
    """Scores of one set (against `reference_uri` when given, else cross-fitted) and the
    estimated contamination with its interval → the run's outputs under `out`."""
    reference = load_reference(reference_uri) if reference_uri else None
    shards, model_id = read_shards(shard_uris, config)
    if reference is not None:
        reference.check_model(model_id)
    features = pl.from_arrow(shards)
    scores, estimate = audit_table(shards, config, density, folds, config.seed, reference, fdr)
    errors, duplicates = errors_table(features), duplicate_groups(features)
    summary = summarize(
        scores,
        errors,
        duplicates,
        sources=sources,
        **estimate.as_dict(),
        reference=reference_uri,
        reference_checksum=reference.checksum if reference else None,
        folds=folds,
        density=density,
        config_hash=config.config_hash(),
        model_id=model_id,
        **extra,
    )
    summary["warnings"] = [estimate.warning] if estimate.warning else []
    summary["warnings"] += (
        reference.warnings
        if reference
        else [
            "without a trusted reference the contamination estimate is a two-component fit "
            "to out-of-fold scores, undetermined on real faces at 0-60% contamination "
            "(docs/statistics.md); pass --reference for Storey's estimate from conformal "
            "p-values"
        ]
    )
    return _write_outputs(out, scores, errors, duplicates, summary)


def evaluate(
    in_dist: Sequence[str], ood: Mapping[str, Sequence[str]], reference_uri: str, out: str
) -> str:
    """AUROC, FPR@95, AUPR-in/out of each OOD set's shards against the in-distribution
    shards → metrics.json (with scores and ROC curves) under `out`."""
    reference = load_reference(reference_uri)

    def scores_of(uris: Sequence[str]) -> np.ndarray:
        shards, model_id = read_shards(uris, reference.config)
        return screen_table(reference, shards, model_id)["score"].to_numpy()

    id_scores = scores_of(in_dist)
    results: dict[str, Any] = {"in_dist": {"n": len(id_scores), "scores": id_scores.tolist()}}
    results["ood"] = {}
    for name, uris in ood.items():
        ood_scores = scores_of(uris)
        fpr, tpr = roc(id_scores, ood_scores)
        results["ood"][name] = {
            "n": len(ood_scores),
            **ood_metrics(id_scores, ood_scores),
            "auroc_interval": auroc_interval(id_scores, ood_scores),
            "scores": ood_scores.tolist(),
            "roc": {"fpr": fpr.tolist(), "tpr": tpr.tolist()},
        }
    return write_json(results, join(out, "metrics.json"))
