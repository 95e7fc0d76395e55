"""Prefect flows and the `diffpath` CLI (installed as diffpath_flows).

Core records (`logging.getLogger("diffpath…")`) reach Prefect's run logs, and are simply
not sent when logged outside a run: the settings must be in the environment before Prefect
is first imported, so they are set here.
"""

import logging
import os

os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "diffpath")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
logging.getLogger("diffpath").setLevel(logging.INFO)  # progress records, not only warnings
