"""The project's prefect.yaml against a real Prefect server (SQLite, 127.0.0.1) and a process
worker started elsewhere: deploy, read the deployments back, run the nightly screen, read
its outputs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import timezone
from pathlib import Path

import polars as pl
import pytest
import yaml

from tests.conftest import SAMPLES

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

PREFECT_YAML = Path(__file__).resolve().parents[2] / "deployments" / "prefect.yaml"
PREFECT = [sys.executable, "-m", "prefect"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    """A real Prefect server in its own process and home; yields the environment to reach it."""
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    process = subprocess.Popen(
        [*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 90
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2)
            break
        except OSError:
            if time.time() > deadline or process.poll() is not None:
                process.kill()
                pytest.fail("the Prefect server did not start within 90 s")
            time.sleep(0.5)
    yield env
    process.terminate()
    process.wait(30)


def test_prefect_yaml_deploys_and_the_nightly_screen_runs(server, tmp_path, tiny_reference) -> None:
    from prefect.client.orchestration import get_client
    from prefect.settings import temporary_settings

    reference = tiny_reference
    spec = yaml.safe_load(PREFECT_YAML.read_text())
    nightly = next(d for d in spec["deployments"] if d["name"] == "nightly-screen")
    nightly["parameters"] |= {
        "source": [str(SAMPLES / "incoming.parquet")],
        "reference": reference,
        "out": str(tmp_path / "screen" / "{date}"),
        "run": {"features_root": str(tmp_path / "cache"), "max_images": 20},
        "policy": {"fail_above": 1.0},
    }
    (tmp_path / "prefect.yaml").write_text(yaml.safe_dump(spec))
    deployed_from, elsewhere = tmp_path / "deploy-dir", tmp_path / "worker-dir"
    deployed_from.mkdir()
    elsewhere.mkdir()  # no checkout in either: entrypoints are module paths
    run = lambda *args, cwd=elsewhere: subprocess.run(  # noqa: E731
        [*PREFECT, *args], env=server, cwd=cwd, capture_output=True, text=True, check=True
    )
    run("work-pool", "create", "gpu-pool", "--type", "process")
    deploy = ["--no-prompt", "deploy", "--all", "--prefect-file", str(tmp_path / "prefect.yaml")]
    run(*deploy, cwd=deployed_from)
    deployed_from.rmdir()  # runs must not depend on where `prefect deploy` ran
    worker = subprocess.Popen(
        [*PREFECT, "worker", "start", "--pool", "gpu-pool"],
        env=server,
        cwd=elsewhere,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        settings = temporary_settings(updates={"api.url": server["PREFECT_API_URL"]})
        with settings, get_client(sync_client=True) as client:
            deployments = {d.name: d for d in client.read_deployments()}
            assert set(deployments) == {d["name"] for d in spec["deployments"]}
            assert "set_working_directory" not in str(deployments["nightly-screen"].pull_steps)
            schedules = [s for d in deployments.values() for s in d.schedules]
            assert len(schedules) == 3 and not any(s.active for s in schedules)

            def final_state(parameters: dict | None = None):
                flow_run = client.create_flow_run_from_deployment(
                    deployments["nightly-screen"].id, parameters=parameters
                )
                deadline = time.time() + 240
                while not (state := client.read_flow_run(flow_run.id).state).is_final():
                    assert time.time() < deadline, f"the run is still {state.name}"
                    time.sleep(1)
                return flow_run, state

            flow_run, state = final_state()
            assert state.is_completed(), state.message
            missing = str(tmp_path / "nowhere" / "reference.json")
            _, failed = final_state({"reference": missing})
            assert failed.is_failed() and "cannot read" in (failed.message or ""), failed
    finally:
        worker.terminate()
        worker.wait(30)
    day = flow_run.expected_start_time.astimezone(timezone.utc).strftime("%Y-%m-%d")
    scores = pl.read_parquet(tmp_path / "screen" / day / "scores.parquet")
    assert len(scores) == 20 and scores["p_value"].is_not_null().all()
    assert (tmp_path / "screen" / "latest.json").exists()
