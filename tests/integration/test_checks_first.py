"""What can be refused without Prefect is refused before Prefect starts: the order of
events, not a time. Each command runs in a subprocess whose `prefect` cannot be imported;
a refusal that came after Prefect started would name that instead of its own reason."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from diffpath.io.lock import LOCK
from tests.conftest import SAMPLES

pytestmark = pytest.mark.integration

STARTED = "prefect started before the arguments were checked"
REFERENCE = str(SAMPLES / "reference.parquet")


def run_without_prefect(
    tmp_path: Path, *args: str, env: dict[str, str | None] | None = None
) -> subprocess.CompletedProcess:
    fake = tmp_path / "no-prefect" / "prefect"
    fake.mkdir(parents=True, exist_ok=True)
    (fake / "__init__.py").write_text(f"raise ImportError({STARTED!r})\n")
    path = os.pathsep.join([str(fake.parent), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path, "PREFECT_HOME": str(tmp_path / "home"), **(env or {})}
    env = {name: value for name, value in env.items() if value is not None}
    command = [sys.executable, "-m", "diffpath_flows.cli", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def held_output(tmp_path: Path) -> Path:
    """An output folder whose lease a live process of this machine holds (this one)."""
    out = tmp_path / "held"
    (out / LOCK).mkdir(parents=True)
    lease = {"run_id": "other", "pid": os.getpid(), "host": socket.gethostname()}
    lease |= {"started": "now", "expires": time.time() + 600}
    (out / LOCK / "0000000000.json").write_text(json.dumps(lease))
    return out


@pytest.mark.hostile(
    ("`screen --fpr 2`, `--fpr 0.1 --threshold 70`", "one line naming the flag, before Prefect"),
    ("a missing source, a missing reference, `--device cuda:7` on a CPU", "one line, first"),
    ("an `--out` another live run holds", "refused in one line naming it, before Prefect"),
)
def test_bad_arguments_are_refused_before_prefect_starts(tmp_path, tiny_reference) -> None:
    out = str(tmp_path / "o")
    screen = ["screen", REFERENCE, "--out", out, "--reference", tiny_reference]
    cases = [
        (["fit-reference", str(tmp_path / "nowhere"), "--out", out], 1, "does not exist"),
        (["fit-reference", REFERENCE, "--out", out, "--holdout", "2"], 2, "holdout"),
        (["fit-reference", REFERENCE, "--out", out, "--device", "cuda:7"], 1, "CUDA GPUs"),
        ([*screen, "--fpr", "2"], 2, "--fpr (config key fpr)"),
        ([*screen, "--fpr", "0.1", "--threshold", "70"], 2, "not both"),
        ([*screen, "--fpr", "0.001"], 2, "cannot flag at 0.001"),
        (["screen", REFERENCE, "--out", out, "--reference", str(tmp_path / "r.json")], 1, "r.json"),
        ([*screen[:3], str(held_output(tmp_path)), *screen[4:]], 1, "another run"),
    ]
    for args, code, reason in cases:
        done = run_without_prefect(tmp_path, *args)
        last = done.stderr.strip().splitlines()[-1]
        assert STARTED not in done.stderr, args
        assert done.returncode == code and reason in last, (args, done.stderr)
    # and the same commands with good arguments do reach Prefect
    done = run_without_prefect(tmp_path, *screen)
    assert STARTED in done.stderr


@pytest.mark.hostile(
    ("`screen s3://…` with no credentials", "one line: which variables to set"),
    ("`screen s3://…` or `--out s3://…` with a dead endpoint", "one line: check the endpoint"),
)
def test_storage_failures_are_one_line_naming_the_uri(tmp_path, tiny_reference) -> None:
    """No credentials, a dead endpoint, an unreachable output: one line each, saying what
    to do, before Prefect starts."""
    no_keys = {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None, "AWS_PROFILE": None}
    no_keys |= {"AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": str(tmp_path / "none")}
    no_keys |= {"AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
    dead = {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}
    dead |= {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    screen = ["screen", "--reference", tiny_reference, "--out"]
    cases = [
        ([*screen, str(tmp_path / "o"), "s3://bucket/night/"], no_keys, "no storage credentials"),
        ([*screen, str(tmp_path / "o"), "s3://bucket/night/"], dead, "cannot reach the storage"),
        ([*screen, "s3://bucket/out", REFERENCE], dead, "cannot reach the storage"),
    ]
    for args, env, reason in cases:
        done = run_without_prefect(tmp_path, *args, env=env)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1 and len(lines) == 1, (args, done.stderr[-1500:])
        assert reason in lines[0] and "s3://bucket/" in lines[0] and STARTED not in lines[0]
