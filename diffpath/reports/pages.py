"""The HTML reports of screen, audit and evaluate runs: alerts, score histograms, ROC
curves, flagged-image thumbnails and error maps, one self-contained file each."""

from __future__ import annotations

import re

import numpy as np
import polars as pl

from diffpath.config import FeatureConfig
from diffpath.features.v2 import error_maps
from diffpath.io.sources import ImageRef, load_images, read_refs
from diffpath.io.storage import exists, join, read_json, read_parquet, write_bytes
from diffpath.model.diffusion import DiffusionModel
from diffpath.reports.history import trend
from diffpath.reports.html import Markup, fragment, page, table, thumbnail, thumbnails
from diffpath.reports.render import error_maps_png, histogram_png, pixels, roc_png
from diffpath.scoring.reference import load_reference

__all__ = [
    "audit_report",
    "evaluate_report",
    "flagged_rows",
    "screen_report",
    "summary_markdown",
    "why_png",
]


def _scores_and_summary(out: str) -> tuple[pl.DataFrame, dict]:
    scores = pl.from_arrow(read_parquet(join(out, "scores.parquet")))
    return scores, read_json(join(out, "summary.json"))


def _unreadable(out: str, max_rows: int = 1000) -> tuple[str, Markup] | None:
    """The images a run could not read, each with its reason (None when all were read)."""
    errors = pl.from_arrow(read_parquet(join(out, "errors.parquet")))
    if not len(errors):
        return None
    rows = [{"path": r["path"], "error": r["error"]} for r in errors.head(max_rows).to_dicts()]
    more = [f"{len(errors) - max_rows} more in errors.parquet."] if len(errors) > max_rows else []
    return f"Unreadable images ({len(errors)})", table(rows) + fragment("notes", notes=more)


def _more(n: int, where: str) -> Markup:
    return fragment("notes", notes=[f"{n} more in {where}."] if n > 0 else [])


def _near_copies(out: str, max_rows: int = 200) -> list[tuple[str, Markup]]:
    """Leaks (each image beside the protected image it copies) and near-duplicate groups
    (each member with its distance from the group's first), as thumbnails and locations."""
    sections = []
    if exists(join(out, "leaks.parquet")):
        leaks = pl.from_arrow(read_parquet(join(out, "leaks.parquet")))
        shown = leaks.head(max_rows)
        ours = read_refs(_refs(shown))
        theirs = read_refs(
            [
                ImageRef(r["protected_uri"], r["protected_row"], r["protected_path"])
                for r in shown.iter_rows(named=True)
            ]
        )
        rows = [
            {
                "image": thumbnail(ours[i], 48, r["path"]),
                "protected": thumbnail(theirs[i], 48, r["protected_path"]),
                "bits apart": r["distance"],
                "mirrored": "yes" if r["mirrored"] else "",
                "path": r["path"],
                "protected path": r["protected_path"],
            }
            for i, r in enumerate(shown.iter_rows(named=True))
        ]
        more = [f"{len(leaks) - max_rows} more in leaks.parquet."] if len(leaks) > max_rows else []
        sections.append(
            (
                f"Near copies of the protected set ({len(leaks)})",
                table(rows) + fragment("notes", notes=more),
            )
        )
    duplicates = pl.from_arrow(read_parquet(join(out, "duplicates.parquet")))
    if len(duplicates):
        shown = duplicates.head(max_rows)
        pictures = read_refs(_refs(shown))
        rows = [
            {
                "group": r["group"],
                "image": thumbnail(pictures[i], 48, r["path"]),
                "bits from the first": r["distance"],
                "same bytes as another": "yes" if r["identical"] else "",
                "path": r["path"],
            }
            for i, r in enumerate(shown.iter_rows(named=True))
        ]
        n_groups = duplicates["group"].n_unique()
        more = (
            [f"{len(duplicates) - max_rows} more in duplicates.parquet."]
            if len(duplicates) > max_rows
            else []
        )
        sections.append(
            (
                f"Near-duplicate groups ({n_groups})",
                table(rows, sortable=True) + fragment("notes", notes=more),
            )
        )
    return sections


def _summary_rows(summary: dict) -> list[dict[str, object]]:
    return [{"field": k, "value": v} for k, v in summary.items() if not isinstance(v, dict | list)]


def _summary_html(summary: dict) -> Markup:
    """The headline, alerts and warnings, flags per folder, then every field folded away."""
    folders = [
        {
            "folder": f["folder"],
            "images": f["n"],
            "flagged": f["n_flagged"],
            "flagged %": f"{f['n_flagged'] / f['n']:.0%}",
        }
        for f in summary.get("flagged_by_folder", [])
    ]
    return fragment(
        "screen_summary",
        # a number like 3.5e-34 never breaks at its hyphen (U+2011, non-breaking)
        headline=re.sub(r"(\d)e-(\d)", "\\1e\u2011\\2", headline(summary)),
        alerts=summary.get("alerts", []),
        warnings=summary.get("warnings", []),
        folders=table(folders) if folders else "",
        fields=table(_summary_rows(summary)),
    )


def _refs(rows: pl.DataFrame) -> list[ImageRef]:
    return [ImageRef(r["uri"], r["row"], r["path"]) for r in rows.iter_rows(named=True)]


def _thumbnails(scores: pl.DataFrame, top: int) -> Markup:
    """Thumbnails of the first `top` rows of a scores table, read from where they were listed."""
    head = scores.head(top)
    return thumbnails(list(zip(head["path"], head["score"], read_refs(_refs(head)), strict=True)))


def _flagged_table(flagged: pl.DataFrame, n_calibration: int, top: int, max_rows: int) -> Markup:
    """Every flagged image (up to `max_rows`) in a sortable table, thumbnails for the first
    `top`, and the p-values' floor 1/(n + 1) stated where flagged images reach it."""
    shown = flagged.head(max_rows)
    refs = _refs(shown)
    pictures = read_refs(refs[:top])
    floor = 1 / (n_calibration + 1)
    at_floor = int((shown["p_value"] <= floor * (1 + 1e-9)).sum())
    p_column = f"p-value (≥ {floor:.2g})" if at_floor else "p-value"
    rows = [
        {
            "image": thumbnail(pictures[i], 48, ref.locator) if i < top else Markup(),
            "rank": r["rank"],
            "path": ref.path,
            "score": r["score"],
            p_column: r["p_value"],
            "location": ref.locator,
        }
        for i, (ref, r) in enumerate(zip(refs, shown.iter_rows(named=True), strict=True))
    ]
    notes = []
    if at_floor:
        notes.append(
            f"{at_floor} flagged image{'s have' if at_floor != 1 else ' has'} the smallest "
            "p-value this reference can give, "
            f"1/({n_calibration} calibration images + 1) = {floor:.2g}: they score above every "
            "calibration image. Fit the reference on more trusted images to rank them finer."
        )
    if len(shown) > top:
        notes.append(f"Thumbnails for the first {top}; the rest are in scores.parquet.")
    if len(flagged) > len(shown):
        notes.append(f"{len(flagged) - len(shown)} more flagged images in scores.parquet.")
    return table(rows, sortable=True) + fragment("notes", notes=notes)


def why_png(scores: pl.DataFrame, model: DiffusionModel, config: FeatureConfig) -> bytes | None:
    """Each image beside its (1 − SSIM)-weighted score-error map at its most telling timestep:
    where the diffusion model cannot explain the image."""
    refs = _refs(scores)
    images, hashes, failed = load_images(refs, **config.geometry)
    if not len(images):
        return None
    decoded = [ref for ref in refs if ref.locator not in failed]  # the images, in order
    maps, timesteps, telling = error_maps(model, images, hashes, config)
    rows = [
        (ref.path, pixels(image), [(f"weighted error, t = {int(timesteps[k])}", heat[k].numpy())])
        for image, heat, k, ref in zip(images, maps, telling, decoded, strict=True)
    ]
    return error_maps_png(rows, shared_scale=False)


def headline(summary: dict) -> str:
    """One sentence a person reads first: how many flagged against how many expected, and
    where the flags come from."""
    n, k = summary["n_scored"], summary["n_flagged"]
    line = f"{k} of {n} images flagged ({summary['flagged_fraction']:.0%})"
    expected = summary.get("expected_flagged_range")
    if expected is not None and n:
        line += "; in-distribution images would give {:,}–{:,} (95%)".format(*expected)
        line += f", p = {summary['flagged_p_value']:.2g} for this many"
    line += "."
    folders = [f for f in summary.get("flagged_by_folder", []) if f["n_flagged"]][:3]
    if folders:
        line += (
            " Most flagged: "
            + ", ".join(f"{f['folder']}/ {f['n_flagged']} of {f['n']}" for f in folders)
            + "."
        )
    if summary.get("n_errors"):
        n = summary["n_errors"]
        line += f" {n} image{'s' * (n != 1)} could not be read (errors.parquet)."
    return line


def screen_report(
    out: str,
    reference_uri: str,
    model: DiffusionModel | None = None,
    history: str | None = None,
    top: int = 500,
    max_rows: int = 5000,
    explain: int = 6,
) -> str:
    """report.html of a screening run: a headline, alerts, every flagged image in a
    sortable table (thumbnails for the first `top`), why the top `explain` were flagged
    (error maps, when a model is given), the score histogram against the calibration
    scores, and the last 60 nights of a dated screen's `history`."""
    scores, summary = _scores_and_summary(out)
    reference = load_reference(reference_uri)
    flagged = scores.filter(pl.col("flagged"))
    if len(flagged):
        table = _flagged_table(flagged, len(reference.calibration_scores), top, max_rows)
        listing = (f"Flagged images ({len(flagged)})", table)
    else:
        listing = (
            "Flagged images (0)",
            Markup("<p>No image was flagged. The 12 highest-scoring, for reference:</p>")
            + _thumbnails(scores, 12),
        )
    sections = [("Summary", _summary_html(summary)), listing]
    sections += [section for section in [_unreadable(out)] if section]
    sections += _near_copies(out)
    why = (
        why_png(flagged.head(explain), model, reference.config) if model and len(flagged) else None
    )
    histogram = histogram_png(
        {
            "reference, held back for calibration": reference.calibration_scores,
            "this run": scores["score"].to_numpy(),
        },
        summary.get("threshold", reference.threshold),
        log=True,
    )
    images = {"Anomaly scores (symmetric log axis)": histogram}
    if why is not None:
        images = {"Why the top flagged images were flagged": why, **images}
    if history is not None:
        nights = pl.from_arrow(read_parquet(history))
        images[f"Nights screened ({min(60, len(nights))} most recent)"] = trend(nights)
    html = page("diffpath screening report", sections, images)
    return write_bytes(join(out, "report.html"), html.encode())


def audit_headline(summary: dict) -> str:
    """What an audit found, in one sentence: the estimate and its interval (or why there is
    none), and how the suspects were chosen."""
    n = summary["n_scored"]
    if summary.get("estimated_contamination") is None:
        line = f"Contamination of these {n:,} images undetermined: "
        line += f"{summary['contamination_undetermined']}."
    else:
        line = (
            f"Estimated contamination {summary['estimated_contamination']:.1%} "
            f"[{summary['contamination_low']:.1%}, {summary['contamination_high']:.1%}] "
            f"of {n:,} images ({summary['estimator']})."
        )
    k, fdr = summary["n_suspects"], summary.get("suspects_fdr")
    chosen = (
        f"Benjamini–Hochberg at a {fdr:.0%} false-discovery rate: at most {fdr:.0%} of them "
        "are expected to be in-distribution"
        if fdr is not None
        else "the estimated number of highest scores"
    )
    return line + f" {k:,} suspect{'s' * (k != 1)} ({chosen})."


def audit_report(out: str, top: int = 48) -> str:
    """report.html of an audit: the headline, the suspects, the score histogram."""
    scores, summary = _scores_and_summary(out)
    flagged = scores.filter(pl.col("flagged"))["score"].to_numpy()
    kept = scores.filter(~pl.col("flagged"))["score"].to_numpy()
    against = summary.get("reference")
    title = "Anomaly scores against the reference" if against else "Out-of-fold anomaly scores"
    sections = [
        ("Summary", Markup("<p><strong>{}</strong></p>").format(audit_headline(summary))),
        (f"The {top} highest-scoring images", _thumbnails(scores, top)),
        *[section for section in [_unreadable(out)] if section],
        *_near_copies(out),
        ("Every field", table(_summary_rows(summary))),
    ]
    html = page(
        "diffpath audit report",
        sections,
        {title: histogram_png({"not suspected": kept, "suspects": flagged})},
    )
    return write_bytes(join(out, "report.html"), html.encode())


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
    html = page(
        "diffpath evaluation report",
        [("Metrics", table(rows))],
        {"ROC curves": roc_png(curves), "Anomaly scores": histogram_png(groups)},
    )
    return write_bytes(join(out, "report.html"), html.encode())


def summary_markdown(summary: dict) -> str:
    """A run's summary as Markdown: alerts first, then the counts (for Prefect artifacts)."""
    alerts = summary.get("alerts") or []
    lines = [headline(summary), ""] if "n_flagged" in summary else []
    lines += [f"**ALERT:** {reason}" for reason in alerts] or ["No alerts."]
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
