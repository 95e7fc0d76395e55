"""Report HTML comes from autoescaped Jinja2 templates: names from the data never run."""

from __future__ import annotations

from diffpath.reports.html import Markup, fragment, page, table, thumbnail, thumbnails

HOSTILE = "<script>alert('x')</script>.jpg"


def test_values_from_the_data_are_escaped_everywhere() -> None:
    html = page(
        HOSTILE,
        [
            (
                "Summary",
                fragment(
                    "benchmark_header",
                    regressions=[HOSTILE],
                    model_id="m",
                    chosen=HOSTILE,
                    baseline="b",
                ),
            ),
            ("Table", table([{"path": HOSTILE, "score": 1.23456}])),
            ("Grid", thumbnails([(HOSTILE, 2.0, b"not an image")])),
        ],
        {HOSTILE: b"\x89PNG"},
    )
    assert "<script>alert" not in html and html.count("&lt;script&gt;") >= 6
    assert html.count("<script>") == 1  # the page's own sort script


def test_tables_format_numbers_and_place_markup_as_html() -> None:
    rows = [{"image": thumbnail(b"junk", 48, "a"), "n": 3, "score": 0.123456, "name": "x"}]
    html = str(table(rows, sortable=True))
    assert "<table class='sortable'>" in html and "<div class='missing' title='a'>?</div>" in html
    assert "<td class='num' data-v='0.1235'>0.1235</td>" in html
    assert "<td class='num' data-v='3'>3</td>" in html and "<td data-v='x'>x</td>" in html
    assert str(table([])) == "<p>(none)</p>"
    assert isinstance(table(rows), Markup)
