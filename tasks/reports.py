"""HTML reports of screen, audit and evaluate runs, written beside their outputs."""

from __future__ import annotations

import io
import json

import numpy as np
import polars as pl
from prefect import task

from diffpath.reference import load_reference
from diffpath.report import histogram_png, render_html, roc_png, table_html, thumbnails_html
from diffpath.sources import read_listing, read_refs
from diffpath.storage import join, read_bytes, write_bytes


def _read_scores(out: str) -> pl.DataFrame:
    return pl.read_parquet(io.BytesIO(read_bytes(join(out, "scores.parquet"))))


def _thumbnails(scores: pl.DataFrame, listing_uri: str, top: int) -> str:
    head = scores.head(top)
    wanted = set(head["path"].to_list())
    refs = [ref for ref in read_listing(listing_uri) if ref.key in wanted]
    data = dict(read_refs(refs)[0])
    items = [(k, s, data.get(k, b"")) for k, s in zip(head["path"], head["score"], strict=True)]
    return thumbnails_html(items)


def _summary_rows(summary: dict) -> list[dict[str, object]]:
    return [{"field": k, "value": v} for k, v in summary.items() if not isinstance(v, dict)]


@task
def screen_report(out: str, listing_uri: str, reference_uri: str, top: int = 48) -> str:
    """Score histogram of the dump against the reference, summary, top flagged thumbnails."""
    scores = _read_scores(out)
    summary = json.loads(read_bytes(join(out, "summary.json")))
    reference = load_reference(reference_uri)
    histogram = histogram_png(
        {
            "reference (held back)": reference.calibration_scores,
            "incoming": scores["score"].to_numpy(),
        },
        reference.threshold,
    )
    page = render_html(
        "diffpath screening report",
        [
            ("Summary", table_html(_summary_rows(summary))),
            (f"Top {top} by anomaly score", _thumbnails(scores, listing_uri, top)),
        ],
        {"Anomaly scores": histogram},
    )
    return write_bytes(join(out, "report.html"), page.encode())


@task
def audit_report(out: str, listing_uri: str, top: int = 48) -> str:
    scores = _read_scores(out)
    summary = json.loads(read_bytes(join(out, "summary.json")))
    flagged = scores.filter(pl.col("flagged"))["score"].to_numpy()
    kept = scores.filter(~pl.col("flagged"))["score"].to_numpy()
    page = render_html(
        "diffpath audit report",
        [
            ("Summary", table_html(_summary_rows(summary))),
            (f"Top {top} suspects", _thumbnails(scores, listing_uri, top)),
        ],
        {"Out-of-fold anomaly scores": histogram_png({"kept": kept, "suspects": flagged})},
    )
    return write_bytes(join(out, "report.html"), page.encode())


@task
def evaluate_report(metrics_uri: str, out: str) -> str:
    """Metrics table, ROC curves and score histograms of an evaluation."""
    metrics = json.loads(read_bytes(metrics_uri))
    ood = metrics["ood"]
    rows = [
        {
            "OOD set": name,
            "n": m["n"],
            "AUROC": m["auroc"],
            "FPR@95": m["fpr95"],
            "AUPR-in": m["aupr_in"],
            "AUPR-out": m["aupr_out"],
        }
        for name, m in ood.items()
    ]
    rows.append(
        {
            "OOD set": "mean",
            "n": sum(m["n"] for m in ood.values()),
            **{
                k: float(np.mean([r[k] for r in rows]))
                for k in ("AUROC", "FPR@95", "AUPR-in", "AUPR-out")
            },
        }
    )
    curves = {
        n: (np.array(m["roc"]["fpr"]), np.array(m["roc"]["tpr"]), m["auroc"])
        for n, m in ood.items()
    }
    groups = {"in-distribution": np.array(metrics["in_dist"]["scores"])}
    groups |= {n: np.array(m["scores"]) for n, m in ood.items()}
    page = render_html(
        "diffpath evaluation report",
        [("Metrics", table_html(rows))],
        {"ROC curves": roc_png(curves), "Anomaly scores": histogram_png(groups)},
    )
    return write_bytes(join(out, "report.html"), page.encode())
