"""One writer per output folder: a run holds `OUT/.diffpath-lock.json` while it writes.

A second run into the same output is refused with a message naming the holder, so two
runs' files never mix. A lock left by a run that died on this machine (its process is
gone) is taken over with a warning; one from another machine must be removed by hand.
The lock is written, then read back, so of two runs that start at once only one proceeds.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from diffpath.errors import StorageError
from diffpath.io.storage import exists, filesystem, join, read_json, write_json

__all__ = ["LockedError", "output_lock", "pid_alive"]

log = logging.getLogger(__name__)
LOCK = ".diffpath-lock.json"


class LockedError(StorageError):
    """Another run is writing to the same output."""


def pid_alive(pid: int) -> bool:
    """Whether process `pid` of this machine may still run (True when unsure)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _alive(holder: dict) -> bool:
    """Whether the lock's process may still run: unknowable on another machine."""
    if holder.get("host") != socket.gethostname():
        return True
    try:
        return pid_alive(int(holder["pid"]))
    except (KeyError, ValueError, TypeError):
        return True


@contextmanager
def output_lock(out: str) -> Iterator[str]:
    """Hold `out` for one run (yields its run id); refuses a live holder with `LockedError`."""
    uri = join(out, LOCK)
    if exists(uri):
        try:
            holder = read_json(uri)
        except StorageError as err:
            raise LockedError(
                f"{err}; delete it if no run is writing to {out}, then rerun"
            ) from err
        if _alive(holder):
            raise LockedError(
                f"another run (id {holder.get('run_id')}, pid {holder.get('pid')} on "
                f"{holder.get('host')}, since {holder.get('started')}) is writing to {out}; "
                f"wait for it, use another --out, or delete {uri} if that run is gone"
            )
        log.warning("taking over %s from run %s, whose process is gone", uri, holder.get("run_id"))
    run_id = uuid.uuid4().hex[:12]
    mine = {
        "run_id": run_id,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_json(mine, uri)
    if read_json(uri).get("run_id") != run_id:  # another run wrote after us: it goes on
        raise LockedError(f"another run started writing to {out} at the same moment; retry")
    try:
        yield run_id
    finally:
        fs, path = filesystem(uri)
        if exists(uri) and read_json(uri).get("run_id") == run_id:
            fs.rm(path)
