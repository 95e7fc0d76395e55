"""The output lock: one writer per folder, a live holder refused by name, a dead one's
lock taken over, a corrupt one named."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from diffpath.io.lock import LOCK, LockedError, output_lock, pid_alive


def test_a_run_holds_the_lock_while_it_writes_and_releases_it(tmp_path) -> None:
    with output_lock(str(tmp_path)) as run_id:
        held = json.loads((tmp_path / LOCK).read_text())
        assert held["run_id"] == run_id and held["pid"] == os.getpid()
        with (
            pytest.raises(LockedError, match=f"another run \\(id {run_id}"),
            output_lock(str(tmp_path)),
        ):
            pass
    assert not (tmp_path / LOCK).exists()


def test_a_dead_processes_lock_is_taken_over_another_hosts_is_not(tmp_path, caplog) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert not pid_alive(gone.pid) and pid_alive(os.getpid())
    dead = {"run_id": "old", "pid": gone.pid, "host": socket.gethostname(), "started": "x"}
    (tmp_path / LOCK).write_text(json.dumps(dead))
    with output_lock(str(tmp_path)):
        pass
    assert "taking over" in caplog.text and not (tmp_path / LOCK).exists()
    (tmp_path / LOCK).write_text(json.dumps({**dead, "host": "elsewhere"}))
    with pytest.raises(LockedError, match="on elsewhere"), output_lock(str(tmp_path)):
        pass


@pytest.mark.hostile(
    ("fault: a corrupt lock file in `--out`", "refused in one line naming it"),
)
def test_a_corrupt_lock_is_named_in_one_line(tmp_path) -> None:
    (tmp_path / LOCK).write_bytes(b"\x00\xff torn")
    with (
        pytest.raises(LockedError, match=f"{LOCK}' is not valid JSON.*delete it if no run"),
        output_lock(str(tmp_path)),
    ):
        pass
