"""The output lock: an exclusive-create lease per run; a live holder refused by name, a
crashed one's lease taken over when it ends, exactly one of two simultaneous runs going on."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from diffpath.io.lock import LOCK, LockedError, output_lock, pid_alive
from diffpath.io.storage import join


def lease_file(out, generation: int = 0):
    return out / LOCK / f"{generation:010d}.json"


def write_lease(out, generation: int = 0, **fields) -> None:
    lease = {"run_id": "abc", "pid": os.getpid(), "host": socket.gethostname()}
    lease_file(out, generation).parent.mkdir(parents=True, exist_ok=True)
    lease_file(out, generation).write_text(
        json.dumps({**lease, "started": "x", "expires": time.time() + 600, **fields})
    )


def test_a_run_holds_the_lock_while_it_writes_and_releases_it(tmp_path) -> None:
    with output_lock(str(tmp_path)) as run_id:
        held = json.loads(lease_file(tmp_path).read_text())
        assert held["run_id"] == run_id and held["pid"] == os.getpid()
        with (
            pytest.raises(LockedError, match=f"another run \\(id {run_id}"),
            output_lock(str(tmp_path)),
        ):
            pass
    assert not list((tmp_path / LOCK).iterdir())  # released: no lease left


def test_a_dead_processes_lease_is_taken_over_at_once_another_hosts_when_it_ends(
    tmp_path, caplog
) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert not pid_alive(gone.pid) and pid_alive(os.getpid())
    write_lease(tmp_path, pid=gone.pid)
    with output_lock(str(tmp_path)):
        assert lease_file(tmp_path, 1).exists()  # the next generation
    assert "taking over" in caplog.text
    write_lease(tmp_path, 4, host="elsewhere", expires=time.time() + 1.0)
    with (
        pytest.raises(LockedError, match=r"on elsewhere.*expires in 1 s"),
        output_lock(str(tmp_path)),
    ):
        pass
    time.sleep(1.1)  # the crashed holder's lease ends: taken over within its stated time
    with output_lock(str(tmp_path)):
        assert lease_file(tmp_path, 5).exists()


def test_a_lease_is_renewed_while_its_run_goes_on(tmp_path) -> None:
    with output_lock(str(tmp_path), lease_seconds=0.6):
        for _ in range(4):  # well past the first lease's end
            time.sleep(0.4)
            with pytest.raises(LockedError, match="another run"), output_lock(str(tmp_path)):
                pass


@pytest.fixture(
    params=["local", pytest.param("s3", marks=[pytest.mark.s3, pytest.mark.integration])]
)
def root(request, tmp_path) -> str:
    """An output root on a local disk, or on a local S3 server (conditional PUTs)."""
    if request.param == "local":
        return str(tmp_path)
    request.getfixturevalue("s3_endpoint")
    return f"s3://diffpath-test/locks/{tmp_path.name}"


@pytest.mark.slow  # 100 pairs
def test_of_two_runs_started_together_exactly_one_proceeds(root) -> None:
    """50 pairs started at the same instant and 50 started 0.1 s apart."""
    for pair, gap in enumerate([0.0] * 50 + [0.1] * 50):
        out, ready = join(root, str(pair)), threading.Barrier(2)
        went, refused = [], []

        def run(delay: float, out: str = out, ready=ready, went=went, refused=refused) -> None:
            ready.wait()
            time.sleep(delay)
            try:
                with output_lock(out):
                    went.append(1)
                    time.sleep(0.3)
            except LockedError:
                refused.append(1)

        runs = [threading.Thread(target=run, args=(d,)) for d in (0.0, gap)]
        [t.start() for t in runs]
        [t.join() for t in runs]
        assert (len(went), len(refused)) == (1, 1), (pair, gap)


@pytest.mark.hostile(
    ("fault: a corrupt lock file in `--out`", "refused in one line naming it"),
)
def test_a_corrupt_lock_is_named_in_one_line(tmp_path) -> None:
    lease_file(tmp_path).parent.mkdir()
    lease_file(tmp_path).write_bytes(b"\x00\xff torn")
    with (
        pytest.raises(
            LockedError, match=r"0000000000\.json' is not valid JSON.*delete it if no run"
        ),
        output_lock(str(tmp_path)),
    ):
        pass


@pytest.mark.hostile(
    ("the output lock cannot be renewed (storage down) for its lease time", "no more writes"),
)
def test_a_run_that_cannot_renew_its_lease_stops_before_its_next_write(
    tmp_path, monkeypatch
) -> None:
    from diffpath.errors import StorageError
    from diffpath.io.storage import write_bytes

    def unreachable(*_: object) -> None:
        raise StorageError("cannot write: endpoint unreachable")

    with output_lock(str(tmp_path), lease_seconds=0.6):
        write_bytes(join(str(tmp_path), "before.txt"), b"ok")
        monkeypatch.setattr("diffpath.io.lock.write_json", unreachable)
        time.sleep(0.7)  # two renewals fail: the lease ends before a third could be tried
        with pytest.raises(LockedError, match="could not be renewed"):
            write_bytes(join(str(tmp_path), "after.txt"), b"late")
        write_bytes(str(tmp_path.parent / "elsewhere.txt"), b"other outputs are not held")
    assert (tmp_path / "before.txt").exists() and not (tmp_path / "after.txt").exists()
    write_bytes(join(str(tmp_path), "next-run.txt"), b"the guard ends with the run")
