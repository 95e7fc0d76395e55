"""The Prefect API a CLI run talks to: the server at PREFECT_API_URL, else an in-process one.

Prefect starts its in-process (ephemeral) server on first use, migrating the SQLite
database under PREFECT_HOME; two runs starting at once on a fresh home race on that
migration, and a busy machine misses Prefect's 20 s start-up limit. So a CLI run starts
the server itself: one process per home at a time (`filelock`), a longer limit, one retry.
A run killed with SIGKILL cannot stop its server; the next run in that home stops it.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
from pathlib import Path

from filelock import FileLock

from diffpath.errors import DiffPathError
from diffpath.io.lock import pid_alive

STARTUP_SECONDS = 120  # at least this long before a start counts as failed
ATTEMPTS = 2
SERVERS = ".diffpath-servers"  # one record per running server: {"owner": pid, "server": pid}


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
    with FileLock(home / ".diffpath-server-start.lock"):  # released if this process dies
        for attempt in range(1, ATTEMPTS + 1):
            server = SubprocessASGIServer()  # Prefect's clients reuse this one
            try:
                _stop_orphans(home / SERVERS)
                server.start(timeout=timeout)
                _record(home / SERVERS, server.server_process.pid)
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


def _record(folder: Path, server_pid: int) -> None:
    """Note that this process owns the server `server_pid` (removed when it exits)."""
    folder.mkdir(exist_ok=True)
    record = folder / f"{os.getpid()}.json"
    record.write_text(json.dumps({"owner": os.getpid(), "server": server_pid}))
    atexit.register(record.unlink, missing_ok=True)


def _stop_orphans(folder: Path) -> None:
    """Stop the servers of runs in this home that died without stopping them (SIGKILL)."""
    for record in folder.glob("*.json"):
        try:
            pids = json.loads(record.read_text())
        except (OSError, ValueError):
            continue
        if pid_alive(pids["owner"]):
            continue
        if _is_prefect_server(pids["server"]):
            os.kill(pids["server"], signal.SIGTERM)
        record.unlink(missing_ok=True)


def _is_prefect_server(pid: int) -> bool:
    """Whether `pid` runs Prefect's server app (Linux /proc; elsewhere never assumed)."""
    try:
        return b"prefect.server.api.server:create_app" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
