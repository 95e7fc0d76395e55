"""Prefect flows and the `diffpath` CLI.

Core records (`logging.getLogger("diffpath…")`) reach Prefect's logs: the setting must be
in the environment before Prefect is first imported, so it is set here.
"""

import os

os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "diffpath")
