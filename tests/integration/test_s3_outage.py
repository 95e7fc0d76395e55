"""The S3 server goes away in the middle of a run and comes back: the run retries with
backoff and completes (or fails with one line and a rerun completes), finished shards are
kept, and the scores equal an uninterrupted run's."""

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


@pytest.mark.hostile(
    (
        "fault: S3 unreachable in the middle of a run",
        "retried; the outputs equal an undisturbed run's",
    ),
)
def test_a_run_survives_an_s3_outage(tmp_path, tiny_config, monkeypatch) -> None:
    from moto.server import ThreadedMotoServer
    from s3fs import S3FileSystem

    from diffpath.errors import DiffPathError
    from flows.pipeline import RunOptions, fit_reference_flow, screen_flow

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
    reference = fit_reference_flow(
        [str(SAMPLES / "reference.parquet")],
        str(tmp_path / "ref"),
        tiny_config,
        holdout=0.5,
        run=RunOptions(max_images=40),
    )
    source = ["s3://outage/data/incoming.parquet"]
    run = RunOptions(shard_size=8, max_images=96, features_root="s3://outage/features")
    outcome: dict[str, object] = {}

    def screen() -> None:
        try:
            outcome["outputs"] = screen_flow(source, reference, "s3://outage/run", run=run)
        except DiffPathError as err:  # a one-line, typed failure is the other allowed end
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
    time.sleep(4)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    worker.join(300)
    try:
        assert not worker.is_alive()
        assert outcome["ended"] > stopped + 4  # the run was in flight through the outage
        if "error" in outcome:
            assert len(str(outcome["error"]).splitlines()) == 1
            outcome["outputs"] = screen_flow(source, reference, "s3://outage/run", run=run)
        fs.invalidate_cache()
        assert fs.glob("outage/run/shards/*/shard-00000.parquet")  # kept through the outage
        options = {
            "aws_endpoint_url": f"http://127.0.0.1:{port}",
            "aws_region": "us-east-1",
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
        }
        survived = pl.read_parquet(outcome["outputs"]["scores"], storage_options=options)
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
