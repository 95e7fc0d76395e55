"""The figures of reports: matplotlib (Agg) to PNG bytes, which pages embed (reports/html.py)."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "error_maps_png",
    "figure",
    "histogram_png",
    "loss_curve_png",
    "pixels",
    "png",
    "roc_png",
    "trend_png",
]


def figure(**subplots: object):
    """(pyplot, figure, axes) on the Agg backend; `subplots` go to `plt.subplots`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(**{"figsize": (7, 3.8), **subplots})


def png(plt, fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def histogram_png(
    groups: Mapping[str, np.ndarray], threshold: float | None = None, log: bool = False
) -> bytes:
    """Overlaid, normalised histograms of anomaly scores, with the flag threshold; `log`
    puts scores on a symmetric-log axis so a long tail does not squash the bulk."""
    plt, fig, ax = figure()
    values = np.concatenate([np.asarray(v, float) for v in groups.values() if len(v)] or [[0.0]])
    low, high = (values.min(), values.max()) if log else np.percentile(values, [0.5, 99.5])
    high = high if high > low else low + 1
    if log:
        from matplotlib.ticker import FuncFormatter, SymmetricalLogLocator

        ax.set_xscale("symlog", linthresh=1.0)
        decades = float(np.diff(np.sign([low, high]) * np.log10(1 + np.abs([low, high])))[0])
        subs = (1.0, 2.0, 5.0) if decades <= 2 else (1.0,)  # readable labels, never crowded
        ticks = SymmetricalLogLocator(base=10, linthresh=1.0, subs=subs)
        ax.xaxis.set_major_locator(ticks)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        to, back = np.arcsinh, np.sinh  # close to symlog: bins of equal width on the axis
        bins = back(np.linspace(to(low), to(high), 60))
    else:
        bins = np.linspace(low, high, 50)
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
        label = f"flag threshold {threshold:.3g} (flagged above)"
        ax.axvline(threshold, color="k", linestyle="--", label=label)
    ax.set(xlabel="anomaly score (−log-density, higher = more anomalous)", ylabel="density")
    ax.legend(fontsize=8)
    return png(plt, fig)


def trend_png(
    nights: Sequence[str],
    flagged: np.ndarray,
    expected: tuple[np.ndarray, np.ndarray],
    alerted: np.ndarray,
    quantiles: Mapping[str, np.ndarray],
) -> bytes:
    """Night by night: the flagged fraction against the 95% range in-distribution images
    give (alerting nights in red), and score quantiles: drift shows as a trend."""
    plt, fig, (top, bottom) = figure(nrows=2, figsize=(7, 5), sharex=True)
    x = np.arange(len(nights))
    top.fill_between(x, *expected, color="tab:blue", alpha=0.2, label="expected (95%)")
    top.plot(x, flagged, "o-", color="tab:blue", markersize=3, label="flagged")
    top.plot(x[alerted], flagged[alerted], "o", color="tab:red", label="alerted")
    top.set(ylabel="fraction flagged")
    top.legend(fontsize=8)
    for name, values in quantiles.items():
        bottom.plot(x, values, ".-", label=name)
    bottom.set(ylabel="anomaly score")
    bottom.legend(fontsize=8)
    step = max(1, len(x) // 10)
    bottom.set_xticks(x[::step], [nights[i] for i in x[::step]], rotation=30, fontsize=7)
    return png(plt, fig)


def roc_png(curves: Mapping[str, tuple[np.ndarray, np.ndarray, float]]) -> bytes:
    """ROC curves, one per OOD set: {name: (fpr, tpr, auroc)}."""
    plt, fig, ax = figure()
    for name, (fpr, tpr, auc) in curves.items():
        ax.plot(fpr, tpr, label=f"{name} (AUROC {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle=":")
    ax.set(xlabel="false positive rate (ID flagged)", ylabel="true positive rate (OOD flagged)")
    ax.legend(fontsize=8)
    return png(plt, fig)


def pixels(image) -> np.ndarray:
    """An image tensor (3, H, W) in [−1, 1] as H×W×3 in [0, 1], for imshow."""
    return ((image.permute(1, 2, 0) + 1) / 2).clamp(0, 1).numpy()


Panels = Sequence[tuple[str, np.ndarray]]  # (title, heat map H×W)


def error_maps_png(rows: Sequence[tuple[str, np.ndarray, Panels]], shared_scale: bool) -> bytes:
    """One row per image (caption, H×W×3 in [0, 1], its error-map panels): the image, then
    each (1 − SSIM)-weighted score-error map; `shared_scale` puts every map on one colour
    scale (its 99th percentile), else each gets its own colour bar."""
    import textwrap

    n_panels = max(len(panels) for _, _, panels in rows)
    side = 2.3 if n_panels == 1 else 1.15
    plt, fig, axes = figure(
        nrows=len(rows),
        ncols=n_panels + 1,
        squeeze=False,
        figsize=(side * (n_panels + 1), side * len(rows)),
    )
    heats = [heat for _, _, panels in rows for _, heat in panels]
    vmax = float(np.percentile(np.stack(heats), 99)) if shared_scale else None
    for r, (caption, image, panels) in enumerate(rows):
        axes[r, 0].imshow(image)
        wrapped = "\n".join(textwrap.wrap(caption, 30, break_on_hyphens=False)[:3])
        axes[r, 0].set_title(wrapped, fontsize=6, parse_math=False)
        for k, (title, heat) in enumerate(panels):
            shown = axes[r, k + 1].imshow(heat, cmap="magma", vmin=0 if vmax else None, vmax=vmax)
            if r == 0 or not shared_scale:
                axes[r, k + 1].set_title(title, fontsize=7)
            if not shared_scale:
                fig.colorbar(shown, ax=axes[r, k + 1], fraction=0.046)
        for ax in axes[r]:
            ax.axis("off")
    return png(plt, fig)


def loss_curve_png(history: Sequence[Mapping[str, float]]) -> bytes:
    """A training run's denoising loss over steps: the smoothed batch loss, and the EMA
    model's loss on seen and on validation images at each checkpoint."""
    plt, fig, ax = figure(figsize=(6, 3.5))
    ax.plot(
        [h["step"] for h in history],
        [h["loss"] for h in history],
        label="train (EMA of batch loss)",
    )
    for key, label in (("val_loss", "validation (unseen identities)"), ("seen_loss", "seen")):
        points = [h for h in history if key in h]
        if points:
            ax.plot([h["step"] for h in points], [h[key] for h in points], "o-", label=label)
    ax.set(xlabel="step", ylabel="denoising MSE", yscale="log")
    ax.legend()
    return png(plt, fig)
