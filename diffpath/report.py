"""Self-contained HTML reports: score histograms, ROC curves, flagged-image thumbnails.

Figures are rendered with matplotlib (Agg) to PNG and embedded as base64, so a report is
one file that opens anywhere, including straight from object storage.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl

from diffpath.reference import load_reference
from diffpath.sources import ImageRef, read_refs
from diffpath.storage import join, read_json, read_parquet, write_bytes

__all__ = [
    "audit_report",
    "evaluate_report",
    "flagged_rows",
    "histogram_png",
    "render_html",
    "roc_png",
    "screen_report",
    "summary_markdown",
    "table_html",
    "thumbnails_html",
]


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=(7, 3.8))


def _png(plt, fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def histogram_png(groups: Mapping[str, np.ndarray], threshold: float | None = None) -> bytes:
    """Overlaid, normalised histograms of anomaly scores, with the flag threshold."""
    plt, fig, ax = _figure()
    values = np.concatenate([np.asarray(v, float) for v in groups.values() if len(v)])
    low, high = np.percentile(values, [0.5, 99.5]) if len(values) else (0.0, 1.0)
    bins = np.linspace(low, high if high > low else low + 1, 50)
    for name, scores in groups.items():
        if not len(scores):
            continue
        ax.hist(
            np.clip(scores, low, high),
            bins=bins,
            density=True,
            alpha=0.5,
            label=f"{name} (n={len(scores)})",
        )
    if threshold is not None:
        ax.axvline(threshold, color="k", linestyle="--", label=f"threshold {threshold:.3g}")
    ax.set(xlabel="anomaly score (−log-density, higher = more anomalous)", ylabel="density")
    ax.legend(fontsize=8)
    return _png(plt, fig)


def roc_png(curves: Mapping[str, tuple[np.ndarray, np.ndarray, float]]) -> bytes:
    """ROC curves, one per OOD set: {name: (fpr, tpr, auroc)}."""
    plt, fig, ax = _figure()
    for name, (fpr, tpr, auc) in curves.items():
        ax.plot(fpr, tpr, label=f"{name} (AUROC {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle=":")
    ax.set(xlabel="false positive rate (ID flagged)", ylabel="true positive rate (OOD flagged)")
    ax.legend(fontsize=8)
    return _png(plt, fig)


def _img(png: bytes, width: int | None = None, title: str = "") -> str:
    size = f' width="{width}"' if width else ""
    data = base64.b64encode(png).decode()
    return f'<img src="data:image/png;base64,{data}"{size} title="{html.escape(title)}">'


def thumbnails_html(items: Sequence[tuple[str, float, bytes | str]], size: int = 64) -> str:
    """A grid of (name, score, encoded image) thumbnails; undecodable images show a '?'."""
    from PIL import Image

    cells = []
    for key, score, data in items:
        try:
            with Image.open(io.BytesIO(data)) as image:
                thumb = image.convert("RGB").resize((size, size))
                buffer = io.BytesIO()
                thumb.save(buffer, format="PNG")
            picture = _img(buffer.getvalue(), size, key)
        except Exception:  # a thumbnail must never break the report
            picture = "<div class='missing'>?</div>"
        cells.append(
            f"<figure>{picture}<figcaption>{html.escape(key[-28:])}<br>{score:.3g}</figcaption></figure>"
        )
    return f"<div class='grid'>{''.join(cells)}</div>"


def table_html(rows: Sequence[Mapping[str, object]]) -> str:
    if not rows:
        return "<p>(none)</p>"
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in rows[0])

    def cell(value: object) -> str:
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        return f"<td>{html.escape(text)}</td>"

    body = "".join("<tr>" + "".join(cell(v) for v in row.values()) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(
    title: str, sections: Sequence[tuple[str, str]], images: Mapping[str, bytes] | None = None
) -> str:
    """One HTML page: `sections` are (heading, inner HTML); `images` are {caption: PNG}."""
    parts = [f"<h2>{html.escape(h)}</h2>{body}" for h, body in sections]
    parts += [f"<h2>{html.escape(c)}</h2>{_img(png)}" for c, png in (images or {}).items()]
    style = (
        "body{font-family:sans-serif;max-width:1000px;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px}"
        ".grid{display:flex;flex-wrap:wrap;gap:6px}figure{margin:0;font-size:10px;width:80px}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>{''.join(parts)}</body></html>"
    )


def _scores_and_summary(out: str) -> tuple[pl.DataFrame, dict]:
    scores = pl.from_arrow(read_parquet(join(out, "scores.parquet")))
    return scores, read_json(join(out, "summary.json"))


def _summary_rows(summary: dict) -> list[dict[str, object]]:
    return [{"field": k, "value": v} for k, v in summary.items() if not isinstance(v, dict | list)]


def _thumbnails(scores: pl.DataFrame, top: int) -> str:
    """Thumbnails of the first `top` rows of a scores table, read from where they were listed."""
    head = scores.head(top)
    refs = [ImageRef(r["uri"], r["row"], r["path"]) for r in head.iter_rows(named=True)]
    contents = read_refs(refs)
    return thumbnails_html(list(zip(head["path"], head["score"], contents, strict=True)))


def screen_report(out: str, reference_uri: str, top: int = 48) -> str:
    """report.html of a screening run: summary, score histogram against the reference,
    top-ranked thumbnails."""
    scores, summary = _scores_and_summary(out)
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
            (f"Top {top} by anomaly score", _thumbnails(scores, top)),
        ],
        {"Anomaly scores": histogram},
    )
    return write_bytes(join(out, "report.html"), page.encode())


def audit_report(out: str, top: int = 48) -> str:
    """report.html of an audit: summary, out-of-fold score histogram, top suspects."""
    scores, summary = _scores_and_summary(out)
    flagged = scores.filter(pl.col("flagged"))["score"].to_numpy()
    kept = scores.filter(~pl.col("flagged"))["score"].to_numpy()
    page = render_html(
        "diffpath audit report",
        [
            ("Summary", table_html(_summary_rows(summary))),
            (f"Top {top} suspects", _thumbnails(scores, top)),
        ],
        {"Out-of-fold anomaly scores": histogram_png({"kept": kept, "suspects": flagged})},
    )
    return write_bytes(join(out, "report.html"), page.encode())


def evaluate_report(metrics_uri: str, out: str) -> str:
    """report.html of an evaluation: metrics table, ROC curves and score histograms."""
    metrics = read_json(metrics_uri)
    ood = metrics["ood"]
    columns = {"AUROC": "auroc", "FPR@95": "fpr95", "AUPR-in": "aupr_in", "AUPR-out": "aupr_out"}
    rows: list[dict[str, object]] = [
        {"OOD set": name, "n": m["n"], **{c: m[k] for c, k in columns.items()}}
        for name, m in ood.items()
    ]
    mean = {c: float(np.mean([m[k] for m in ood.values()])) for c, k in columns.items()}
    rows.append({"OOD set": "mean", "n": sum(m["n"] for m in ood.values()), **mean})
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


def summary_markdown(summary: dict) -> str:
    """A run's summary as Markdown: alerts first, then the counts (for Prefect artifacts)."""
    alerts = summary.get("alerts") or []
    lines = [f"**ALERT:** {reason}" for reason in alerts] or ["No alerts."]
    lines += ["", "| field | value |", "|---|---|"]
    lines += [
        f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |"
        for k, v in summary.items()
        if not isinstance(v, dict | list)
    ]
    return "\n".join(lines)


def flagged_rows(out: str, top: int = 50) -> list[dict]:
    """The `top` highest-ranked flagged images of a run: locator, score, p-value."""
    scores, _ = _scores_and_summary(out)
    columns = [c for c in ("path", "uri", "row", "score", "p_value", "rank") if c in scores.columns]
    return scores.filter(pl.col("flagged")).head(top).select(columns).to_dicts()
