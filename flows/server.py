"""The Prefect API a CLI run talks to: the server at PREFECT_API_URL, else an in-process one.

Prefect starts its in-process (ephemeral) server on first use, migrating the SQLite
database under PREFECT_HOME; two runs starting at once on a fresh home race on that
migration, and a busy machine misses Prefect's 20 s start-up limit. So a CLI run starts
the server itself: one process per home at a time (a file lock), a longer limit, one retry.
"""

from __future__ import annotations

import fcntl
from pathlib import Path

from diffpath.errors import DiffPathError

STARTUP_SECONDS = 120  # at least this long before a start counts as failed
ATTEMPTS = 2


class ServerStartError(DiffPathError):
    """The in-process Prefect server did not start."""


def ensure_api() -> None:
    """Start the in-process server unless PREFECT_API_URL names one (then do nothing)."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_HOME,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
    )

    if PREFECT_API_URL.value():
        return
    home = Path(PREFECT_HOME.value()).expanduser()
    home.mkdir(parents=True, exist_ok=True)
    timeout = max(STARTUP_SECONDS, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
    with (home / ".diffpath-server-start.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        for attempt in range(1, ATTEMPTS + 1):
            server = SubprocessASGIServer()  # Prefect's clients reuse this one
            try:
                server.start(timeout=timeout)
                return
            except RuntimeError as err:
                server.stop()
                if attempt == ATTEMPTS:
                    raise ServerStartError(
                        f"the in-process Prefect server (PREFECT_HOME {home}) did not start "
                        f"in {ATTEMPTS} tries of {timeout} s ({str(err).splitlines()[0]}): "
                        "retry when the machine is less busy, or start one with `prefect "
                        "server start` and set PREFECT_API_URL"
                    ) from err
