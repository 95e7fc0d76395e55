"""Deployment pull steps: what a worker does before it starts a diffpath flow run."""

from __future__ import annotations

import os


def installed_package() -> dict[str, str]:
    """Fetch nothing: entrypoints are module paths of the installed package, so a run
    starts in the worker's own directory, never in the one `prefect deploy` ran in (which
    Prefect records when a deployment names no pull step)."""
    return {"directory": os.getcwd()}
