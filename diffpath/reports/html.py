"""Self-contained HTML: the Jinja2 templates of reports/templates/, autoescaped, with
figures embedded as base64 PNG so a report is one file that opens anywhere, including
straight from object storage. A fragment that is HTML already is a `Markup`."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

__all__ = ["Markup", "fragment", "page", "table", "thumbnail", "thumbnails"]


def _cell(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


_env = Environment(
    loader=PackageLoader("diffpath.reports"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters["b64"] = lambda data: base64.b64encode(data).decode()
_env.filters["cell"] = _cell
_env.tests["markup"] = lambda value: isinstance(value, Markup)
_env.tests["number"] = lambda value: isinstance(value, int | float) and not isinstance(value, bool)


def fragment(template: str, **context: Any) -> Markup:
    """A rendered template (`templates/<template>.html.j2`), safe to place in a page."""
    return Markup(_env.get_template(f"{template}.html.j2").render(**context))


def page(
    title: str, sections: Sequence[tuple[str, str]], images: Mapping[str, bytes] | None = None
) -> str:
    """One HTML page: `sections` are (heading, Markup body); `images` are {caption: PNG}."""
    return str(fragment("page", title=title, sections=sections, images=images or {}))


def table(rows: Sequence[Mapping[str, object]], sortable: bool = False) -> Markup:
    """A table of rows (dicts; a `Markup` value is placed as HTML, e.g. a thumbnail);
    `sortable` headers sort the rows when clicked."""
    return fragment("table", rows=rows, sortable=sortable)


def thumbnail(data: bytes | str, size: int = 64, title: str = "") -> Markup:
    """An <img> of encoded image bytes fitted into size×size, keeping its aspect ratio;
    a '?' box for anything that does not decode (a thumbnail never breaks a report)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.thumbnail((size, size))
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, format="PNG")
    except Exception:
        return Markup("<div class='missing' title='{}'>?</div>").format(title)
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return Markup('<img src="data:image/png;base64,{}" title="{}">').format(encoded, title)


def thumbnails(items: Sequence[tuple[str, float, bytes | str]], size: int = 64) -> Markup:
    """A grid of (name, score, encoded image) thumbnails with wrapped captions."""
    cells = [(name, score, thumbnail(data, size, name)) for name, score, data in items]
    return fragment("thumbnails", items=cells)
