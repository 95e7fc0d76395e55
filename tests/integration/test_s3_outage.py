"""The S3 server goes away in the middle of a run for longer than botocore's request
retries last, and comes back: Prefect retries the failed tasks with backoff, the run
completes, finished shards are kept, and the scores equal an uninterrupted run's."""

from __future__ import annotations

import socket
import threading
import time

import numpy as np
import polars as pl
import pytest

from tests.conftest import SAMPLES

pytestmark = [
    pytest.mark.integration,
    pytest.mark.s3,
    pytest.mark.slow,
    pytest.mark.usefixtures("prefect_harness"),
]


# botocore's requests give up within ~3 s (3 attempts, backoff <= 1 + 2 s); Prefect's task
# retries wait 2, 10, 30 s: an outage of 8 s outlasts the first and not the second
OUTAGE_SECONDS = 8


def _run_counts(since: float) -> list[int]:
    """How many times each task run that started after `since` ran, from the Prefect API."""
    from datetime import datetime, timezone

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterStartTime

    after = TaskRunFilterStartTime(after_=datetime.fromtimestamp(since, timezone.utc))
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(task_run_filter=TaskRunFilter(start_time=after), limit=200)
    return [run.run_count for run in runs]


@pytest.mark.hostile(
    (
        "fault: S3 unreachable in the middle of a run",
        "tasks retried (run_count > 1 in the API); the outputs equal an undisturbed run's",
    ),
)
def test_a_run_survives_an_s3_outage(tmp_path, tiny_reference, monkeypatch) -> None:
    from moto.server import ThreadedMotoServer
    from s3fs import S3FileSystem

    from diffpath.errors import DiffPathError
    from diffpath_flows.pipeline import RunOptions, screen_flow

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }.items():
        monkeypatch.setenv(name, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    S3FileSystem.clear_instance_cache()
    fs = S3FileSystem()
    fs.mkdir("outage")
    fs.put(str(SAMPLES / "incoming.parquet"), "outage/data/incoming.parquet")
    reference = tiny_reference
    source = ["s3://outage/data/incoming.parquet"]
    run = RunOptions(shard_size=8, max_images=96, features_root="s3://outage/features")
    outcome: dict[str, object] = {}

    def screen() -> None:
        try:
            outcome["outputs"] = screen_flow(source, reference, "s3://outage/run", run=run)
        except DiffPathError as err:
            outcome["error"] = err
        outcome["ended"] = time.time()

    worker = threading.Thread(target=screen)
    worker.start()
    deadline = time.time() + 120
    while not fs.glob("outage/run/shards/*/shard-00000.parquet"):
        assert time.time() < deadline and worker.is_alive(), outcome
        time.sleep(0.2)
        fs.invalidate_cache()
    server.stop()  # the outage
    stopped = time.time()
    time.sleep(OUTAGE_SECONDS)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    worker.join(300)
    try:
        assert not worker.is_alive()
        assert "error" not in outcome, outcome["error"]
        assert outcome["ended"] > stopped + OUTAGE_SECONDS  # in flight through the outage
        assert max(_run_counts(since=stopped - 1)) > 1  # Prefect retried a failed task
        fs.invalidate_cache()
        assert fs.glob("outage/run/shards/*/shard-00000.parquet")  # kept through the outage
        survived = pl.read_parquet(fs.open(outcome["outputs"]["scores"]))
        clean = pl.read_parquet(
            screen_flow(
                source,
                reference,
                str(tmp_path / "clean"),
                run=RunOptions(shard_size=8, max_images=96),
            )["scores"]
        )
        a, b = survived.sort("uri", "row"), clean.sort("uri", "row")
        assert len(a) == 96 and a["sha256"].equals(b["sha256"])
        np.testing.assert_allclose(a["score"], b["score"], rtol=1e-4)
    finally:
        server.stop()
        S3FileSystem.clear_instance_cache()
