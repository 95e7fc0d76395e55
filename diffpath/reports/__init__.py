"""Where results are reported: figures, the HTML pages of screen, audit, evaluate and the
benchmark (Jinja2 templates), and the history of nightly screens.

The top layer: may import every other part of `diffpath`.
"""
