"""The figures of reports: matplotlib (Agg) to PNG bytes, which pages embed (reports/html.py)."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["figure", "histogram_png", "png", "roc_png", "trend_png"]


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
