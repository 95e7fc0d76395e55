"""The benchmark's results.md and report.html: per-method means with intervals, the AUROC
matrix, ROC curves and score histograms per pair, what the model "sees", the audit."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow.compute as pc

from diffpath.benchmark.spec import BenchmarkSpec
from diffpath.config import FeatureConfig
from diffpath.features.v2 import error_maps
from diffpath.io.sources import ImageRef, load_images
from diffpath.io.storage import join, read_json, read_parquet, write_bytes
from diffpath.model.diffusion import DiffusionModel
from diffpath.reports.html import fragment, page, table
from diffpath.reports.render import error_maps_png, figure, pixels, png
from diffpath.scoring.metrics import roc

__all__ = ["benchmark_markdown", "benchmark_report"]


def _ci(value: float, interval: Sequence[float]) -> str:
    return f"{value:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]"


def method_rows(summary: Mapping[str, Any]) -> list[dict[str, object]]:
    """One row per method: cost, mean test AUROC [95% CI], validation mean, vs baseline."""
    base = summary["baseline"]
    return [
        {
            "method": m["method"],
            "label": m["label"],
            "UNet evals/image": m["unet_evals"],
            "mean AUROC (test) [95% CI]": _ci(m["test_auroc"], m["test_auroc_interval"]),
            "mean AUROC (validation)": f"{m['validation_auroc']:.3f}",
            "mean FPR@95": f"{m['test_fpr95']:.3f}",
            f"pairs won vs {base}": m["wins_vs_baseline"],
            f"Δ vs {base} [95% CI]": _ci(m["diff_vs_baseline"], m["diff_interval"]),
            "feature seconds": f"{m['seconds']:.0f}",
        }
        for m in summary["methods"]
    ]


def pair_rows(
    results: Sequence[Mapping[str, Any]], methods: Sequence[str], intervals: bool = True
) -> list[dict]:
    """Test AUROC (with its 95% interval) per pair (rows) and method (columns)."""
    by = {(r["in_dist"], r["ood"], r["method"]): r for r in results if r["split"] == "test"}
    pairs = dict.fromkeys((r["in_dist"], r["ood"]) for r in results if r["split"] == "test")
    return [
        {
            "in-dist": a,
            "OOD": b,
            **{
                m: f"{by[a, b, m]['auroc']:.3f}"
                + (
                    f" [{by[a, b, m]['auroc_low']:.2f}, {by[a, b, m]['auroc_high']:.2f}]"
                    if intervals
                    else ""
                )
                for m in methods
            },
        }
        for a, b in pairs
    ]


def _fmt(row: Mapping[str, Any]) -> dict[str, object]:
    return {
        k: "" if v is None else f"{v:.3f}" if isinstance(v, float) else v for k, v in row.items()
    }


def _markdown_table(rows: Sequence[Mapping[str, object]]) -> str:
    if not rows:
        return "(none)"
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(r[k]) for k in head) + " |" for r in rows]
    return "\n".join(lines)


def benchmark_markdown(summary: Mapping[str, Any], results: Sequence[Mapping[str, Any]]) -> str:
    """results.md: regressions first, then methods, the pair matrix, the audit, deltas."""
    methods = [m["method"] for m in summary["methods"]]
    parts = [f"# Benchmark {summary['name']} (model {summary['model_id']})", ""]
    parts += [f"**REGRESSION:** {r}" for r in summary["regressions"]] or []
    parts += [
        f"Chosen default ({summary['chosen_on']}): **{summary['chosen_default']}**; "
        f"baseline: {summary['baseline']}. Images per set and role: "
        + ", ".join(f"{k} {v}" for k, v in summary["images"].items())
        + "".join(
            f"; **{n} unreadable in {k}** (see the shards' `error` column)"
            for k, n in summary["unreadable"].items()
        ),
        "",
        "## Methods (means over the pairs; test split)",
        _markdown_table(method_rows(summary)),
        "",
        "## Test AUROC per pair [bootstrap 95% interval]",
        _markdown_table(pair_rows(results, methods)),
    ]
    if summary["audit"]:
        parts += [
            "",
            "## Audit: contaminants mixed into a clean set",
            _markdown_table([_fmt(r) for r in summary["audit"]]),
        ]
    if summary["deltas"]:
        parts += [
            "",
            f"## Against {summary['previous']}",
            _markdown_table([_fmt(r) for r in summary["deltas"]]),
        ]
    return "\n".join(parts) + "\n"


def _grid(pairs: Sequence[tuple[str, str]], draw) -> bytes:
    """One small axis per pair, four to a row."""
    cols = 4
    rows = -(-len(pairs) // cols)
    plt, fig, _ = figure()
    plt.close(fig)
    fig, axes = plt.subplots(rows, cols, figsize=(13, 3.0 * rows), squeeze=False)
    for ax, pair in zip(axes.flat, pairs, strict=False):
        draw(ax, *pair)
        ax.set_title(f"{pair[0]} (in) vs {pair[1]}", fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(pairs) :]:
        ax.axis("off")
    return png(plt, fig)


def _scores(table, method: str, in_dist: str, dataset: str) -> np.ndarray:
    mask = pc.and_(
        pc.and_(pc.equal(table["method"], method), pc.equal(table["in_dist"], in_dist)),
        pc.and_(pc.equal(table["split"], "test"), pc.equal(table["dataset"], dataset)),
    )
    return table.filter(mask)["score"].to_numpy()


def error_map_png(
    model: DiffusionModel, spec: BenchmarkSpec, scores, config: FeatureConfig, per_set: int = 2
) -> bytes:
    """Rows of images (`per_set` test images of each set), each beside its
    (1 − SSIM)-weighted score error |u_t| at every timestep: what the model cannot explain."""
    rows = []
    for name in spec.datasets:
        test = scores.filter(
            pc.and_(pc.equal(scores["dataset"], name), pc.equal(scores["split"], "test"))
        ).slice(0, per_set)
        refs = [ImageRef(r["uri"], r["row"], r["path"]) for r in test.to_pylist()]
        cfg = config.model_copy(update={"crop": spec.datasets[name].crop})
        images, hashes, _ = load_images(refs, **cfg.geometry)
        if len(images):
            maps, t, _ = error_maps(model, images, hashes, cfg)
            rows += [(name, image, heat, t) for image, heat in zip(images, maps, strict=True)]
    panels = [
        (name, pixels(image), [(f"t = {int(s)}", heat[k].numpy()) for k, s in enumerate(t)])
        for name, image, heat, t in rows
    ]
    return error_maps_png(panels, shared_scale=True)


def benchmark_report(out: str, model: DiffusionModel) -> str:
    """Write results.md and report.html beside a benchmark's results; returns the report."""
    summary = read_json(join(out, "summary.json"))
    results = read_parquet(join(out, "results.parquet")).to_pylist()
    scores = read_parquet(join(out, "scores.parquet"))
    spec = BenchmarkSpec(**summary["spec"])
    write_bytes(join(out, "results.md"), benchmark_markdown(summary, results).encode())
    pairs = spec.pair_list()
    chosen, base = summary["chosen_default"], summary["baseline"]
    shown = list(
        dict.fromkeys(
            [chosen, base, *[m for m in ("diffpathv2", "diffpath1d") if m in spec.methods]]
        )
    )

    def draw_roc(ax, a: str, b: str) -> None:
        for m in shown:
            fpr, tpr = roc(_scores(scores, m, a, a), _scores(scores, m, a, b))
            ax.plot(fpr, tpr, label=m, linewidth=1)
        ax.plot([0, 1], [0, 1], color="grey", linewidth=0.6, linestyle=":")
        ax.legend(fontsize=6)

    def draw_hist(ax, a: str, b: str) -> None:
        id_s, ood_s = _scores(scores, chosen, a, a), _scores(scores, chosen, a, b)
        low, high = np.percentile(np.r_[id_s, ood_s], [0.5, 99.5])
        bins = np.linspace(low, high if high > low else low + 1, 40)
        ax.hist(np.clip(id_s, low, high), bins, density=True, alpha=0.5, label=f"{a} (in)")
        ax.hist(np.clip(ood_s, low, high), bins, density=True, alpha=0.5, label=b)
        ax.legend(fontsize=6)

    config = FeatureConfig(method="diffpathv2")  # the paper's V2 maps
    header = fragment(
        "benchmark_header",
        regressions=summary["regressions"],
        model_id=summary["model_id"],
        chosen=chosen,
        baseline=base,
    )
    sections = [
        ("Summary", header),
        (
            "Methods (test split, means over the pairs)",
            table(method_rows(summary), sortable=True),
        ),
        (
            "Test AUROC per pair (intervals in results.md)",
            table(
                pair_rows(results, [m["method"] for m in summary["methods"]], intervals=False),
                sortable=True,
            ),
        ),
    ]
    if summary["audit"]:
        sections.append(
            (
                "Audit: contaminants mixed into a clean set",
                table([_fmt(r) for r in summary["audit"]]),
            )
        )
    if summary["deltas"]:
        sections.append(
            (
                f"Against {summary['previous']}",
                table([_fmt(r) for r in summary["deltas"]], sortable=True),
            )
        )
    images = {
        f"ROC curves (test split): {', '.join(shown)}": _grid(pairs, draw_roc),
        f"Anomaly scores of {chosen} (test split)": _grid(pairs, draw_hist),
        "What the model cannot explain: (1 − SSIM)-weighted score error |u_t| per timestep "
        "(DiffPathV2, paper settings), two test images per set": error_map_png(
            model, spec, scores, config
        ),
    }
    html = page(f"diffpath benchmark: {summary['name']}", sections, images)
    return write_bytes(join(out, "report.html"), html.encode())
