"""Rendering for reports: matplotlib figures to PNG, tables and pages to self-contained HTML.

Figures are rendered with matplotlib (Agg) to PNG and embedded as base64, so a report is
one file that opens anywhere, including straight from object storage.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "Markup",
    "figure",
    "histogram_png",
    "png",
    "render_html",
    "roc_png",
    "table_html",
    "thumbnail",
    "thumbnails_html",
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


def _img(png: bytes, width: int | None = None, title: str = "") -> str:
    size = f' width="{width}"' if width else ""
    data = base64.b64encode(png).decode()
    return f'<img src="data:image/png;base64,{data}"{size} title="{html.escape(title)}">'


def thumbnail(data: bytes | str, size: int = 64, title: str = "") -> str:
    """An <img> of encoded image bytes fitted into size×size, keeping its aspect ratio;
    a '?' box for anything that does not decode (a thumbnail never breaks a report)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.thumbnail((size, size))
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, format="PNG")
        return _img(buffer.getvalue(), title=title)
    except Exception:
        return f"<div class='missing' title='{html.escape(title)}'>?</div>"


def thumbnails_html(items: Sequence[tuple[str, float, bytes | str]], size: int = 64) -> str:
    """A grid of (name, score, encoded image) thumbnails with wrapped captions."""
    cells = [
        f"<figure>{thumbnail(data, size, key)}<figcaption title='{html.escape(key)}'>"
        f"{html.escape(key)}<br>{score:.3g}</figcaption></figure>"
        for key, score, data in items
    ]
    return f"<div class='grid'>{''.join(cells)}</div>"


def table_html(rows: Sequence[Mapping[str, object]], sortable: bool = False) -> str:
    """A table of rows (dicts); values that are already HTML are wrapped in `Markup`;
    `sortable` headers sort the rows when clicked."""
    if not rows:
        return "<p>(none)</p>"
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in rows[0])

    def cell(value: object) -> str:
        if isinstance(value, Markup):
            return f"<td>{value}</td>"
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        number = " class='num'" if isinstance(value, int | float) else ""
        return f"<td{number} data-v='{html.escape(text)}'>{html.escape(text)}</td>"

    body = "".join("<tr>" + "".join(cell(v) for v in row.values()) + "</tr>" for row in rows)
    kind = " class='sortable'" if sortable else ""
    return f"<table{kind}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class Markup(str):
    """A table value that is HTML already (a thumbnail)."""


def render_html(
    title: str, sections: Sequence[tuple[str, str]], images: Mapping[str, bytes] | None = None
) -> str:
    """One HTML page: `sections` are (heading, inner HTML); `images` are {caption: PNG}."""
    parts = [f"<h2>{html.escape(h)}</h2>{body}" for h, body in sections]
    parts += [f"<h2>{html.escape(c)}</h2>{_img(png)}" for c, png in (images or {}).items()]
    style = (
        "body{font-family:sans-serif;max-width:1000px;margin:2em auto}img{max-width:100%}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px}"
        "td{overflow-wrap:anywhere;max-width:420px}td.num{white-space:nowrap;text-align:right}"
        "th{cursor:pointer;background:#f3f3f3;white-space:nowrap}"
        ".headline{font-size:1.15em;font-weight:bold}.small{font-size:0.9em;color:#444}"
        ".grid{display:flex;flex-wrap:wrap;gap:10px}"
        "figure{margin:0;font-size:10px;width:96px;overflow-wrap:anywhere}"
        "figure img{display:block;margin:auto}.missing{width:64px;height:64px;background:#ddd}"
        ".alert{background:#fdd;border:1px solid #c33;padding:6px 10px;margin:4px 0}"
        ".note{background:#ffd;border:1px solid #cc3;padding:6px 10px;margin:4px 0}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>{''.join(parts)}"
        f"<script>{SORT_SCRIPT}</script></body></html>"
    )


# click a header of a table.sortable: sort its rows by that column (numbers as numbers)
SORT_SCRIPT = """
document.querySelectorAll('table.sortable th').forEach((th, i) => th.onclick = () => {
  const body = th.closest('table').tBodies[0], rows = [...body.rows];
  const key = r => { const v = r.cells[i].dataset.v ?? ''; const n = parseFloat(v);
                     return isNaN(n) ? v : n; };
  const dir = th.dataset.dir = th.dataset.dir === 'asc' ? 'desc' : 'asc';
  rows.sort((a, b) => (key(a) > key(b) ? 1 : key(a) < key(b) ? -1 : 0) * (dir === 'asc' ? 1 : -1));
  rows.forEach(r => body.appendChild(r));
});
"""
