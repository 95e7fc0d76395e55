"""Where a model is, as a run records it (light: the CLI imports it before torch)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["model_location"]


def model_location(source: str) -> str:
    """Where a model is, as a run records it: a local folder as its absolute path, so that
    a reference finds its weights from any working directory (a cron job, a worker);
    'default', hub ids and URIs unchanged."""
    if source == "default" or "://" in source:
        return source
    path = Path(source).expanduser()
    return str(path.resolve()) if path.is_dir() else source
