"""One writer per output folder: a run holds a lease in `OUT/.diffpath-lock/` while it writes.

The lock is a numbered lease, `<generation>.json`, created with an exclusive create (O_EXCL
on a local disk, a conditional PUT — `If-None-Match: *` — on S3), so of two runs that start
at once exactly one creates it. A holder renews its lease every `LEASE_SECONDS / 3`; a
lease not renewed for `LEASE_SECONDS` (its holder crashed, on any host) is taken over by
creating the next generation, and a lease from a process of this machine that is gone is
taken over at once. The holder is the highest generation: a run that created a lower one
(it was slow and lost a takeover race) backs off. A second run into a held output is
refused with a message naming the holder, so two runs' files never mix.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from diffpath.errors import StorageError
from diffpath.io.storage import (
    create_exclusive,
    filesystem,
    guard_writes,
    join,
    numbered,
    read_json,
    write_json,
)

__all__ = ["LEASE_SECONDS", "LOCK", "LockedError", "check_unlocked", "output_lock", "pid_alive"]

log = logging.getLogger(__name__)
LOCK = ".diffpath-lock"  # a folder of leases, one per generation
LEASE_SECONDS = float(os.environ.get("DIFFPATH_LOCK_LEASE_SECONDS", 600))


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


def _expired(holder: dict, now: float) -> bool:
    """Whether a lease may be taken over: not renewed in time, or its process is gone."""
    if float(holder.get("expires", 0)) < now:
        return True
    if holder.get("host") != socket.gethostname():
        return False
    try:
        return not pid_alive(int(holder["pid"]))
    except (KeyError, ValueError, TypeError):
        return False


def _lease_uri(folder: str, generation: int) -> str:
    return join(folder, f"{generation:010d}.json")


def _holder_message(holder: dict, out: str, uri: str) -> str:
    left = max(0, float(holder.get("expires", 0)) - time.time())
    return (
        f"another run (id {holder.get('run_id')}, pid {holder.get('pid')} on "
        f"{holder.get('host')}, since {holder.get('started')}) is writing to {out}; wait for "
        f"it, use another --out, or delete {uri} if that run is gone (its lease expires in "
        f"{left:.0f} s if it is)"
    )


def _read_lease(uri: str, out: str) -> dict:
    try:
        return read_json(uri)
    except StorageError as err:
        raise LockedError(f"{err}; delete it if no run is writing to {out}, then rerun") from err


def check_unlocked(out: str) -> list[int]:
    """Refuse `out` (`LockedError` naming the holder) while a live run holds it; takes
    nothing. Returns the lease generations present (all ended)."""
    folder = join(out, LOCK)
    generations = numbered(folder, ".json")
    if generations:
        uri = _lease_uri(folder, generations[-1])
        holder = _read_lease(uri, out)
        if not _expired(holder, time.time()):
            raise LockedError(_holder_message(holder, out, uri))
    return generations


def _acquire(out: str, folder: str, lease: dict) -> int:
    """Create the next lease generation, or raise `LockedError` naming the live holder."""
    generations = check_unlocked(out)
    if generations:
        log.warning("taking over %s, whose lease ended", _lease_uri(folder, generations[-1]))
    mine = generations[-1] + 1 if generations else 0
    created = create_exclusive(_lease_uri(folder, mine), json.dumps(lease).encode())
    now, present = time.time(), numbered(folder, ".json")
    others = [g for g in present if g != mine]
    # the holder is the highest generation, and every other lease must have ended: a run
    # that saw an old listing and created a stale number backs off here
    if (
        not created
        or present[-1] != mine
        or not all(_expired(_read_lease(_lease_uri(folder, g), out), now) for g in others)
    ):
        if created:
            _remove(_lease_uri(folder, mine))
        raise LockedError(f"another run started writing to {out} at the same moment; retry")
    return mine


def _remove(uri: str) -> None:
    fs, path = filesystem(uri)
    with suppress(FileNotFoundError):
        fs.rm(path)


@contextmanager
def output_lock(out: str, lease_seconds: float | None = None) -> Iterator[str]:
    """Hold `out` for one run (yields its run id), renewing the lease while it runs;
    refuses a live holder with `LockedError`."""
    seconds = LEASE_SECONDS if lease_seconds is None else lease_seconds
    folder = join(out, LOCK)
    run_id = uuid.uuid4().hex[:12]
    lease = {
        "run_id": run_id,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "expires": time.time() + seconds,
    }
    generation = _acquire(out, folder, lease)
    uri = _lease_uri(folder, generation)
    stop = threading.Event()
    lost: list[str] = []  # why this run may no longer write, once it may not

    def renew() -> None:
        renewed = time.time()
        while not lost and not stop.wait(seconds / 3):
            try:
                if numbered(folder, ".json")[-1:] != [generation]:
                    lost.append("another run took its lease over")
                    continue
                write_json({**lease, "expires": time.time() + seconds}, uri)
                renewed = time.time()
            except StorageError as err:  # the next renewal may get through, if in time
                log.warning("could not renew the lock %s: %s", uri, err)
                if time.time() - renewed >= 2 * seconds / 3:  # ends before the next try
                    lost.append(f"its lease could not be renewed for {seconds:.0f} s ({err})")

    def check() -> None:
        if lost:
            raise LockedError(
                f"this run stopped before writing more to {out}: {lost[0]}, so another run "
                "may be writing there; check the storage, then rerun"
            )

    renewer = threading.Thread(target=renew, name=f"lease {uri}", daemon=True)
    renewer.start()
    try:
        with guard_writes(out.rstrip("/") + "/", check):
            yield run_id
    finally:
        stop.set()
        renewer.join()
        present = numbered(folder, ".json")
        if present[-1:] != [generation]:
            log.error("the lock %s was taken over while this run held it", uri)
        for spent in (g for g in present if g <= generation):
            _remove(_lease_uri(folder, spent))
