"""Feature shards on real Dask clusters reporting to a real Prefect server: a LocalCluster
(every shard runs exactly once) and a separate `dask scheduler` with two `dask worker`
processes, one killed mid-run (its shards rerun elsewhere); scores equal a threads run's."""

from __future__ import annotations

import polars as pl
import pytest

from tests.conftest import SAMPLES

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def test_screen_on_a_dask_cluster_equals_threads(
    tmp_path, tiny_config, tiny_run, monkeypatch
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.settings import get_current_settings

    from diffpath_flows.pipeline import fit_reference_flow, screen_flow, task_runner

    # worker processes reach the session's Prefect test server through the environment
    monkeypatch.setenv("PREFECT_API_URL", str(get_current_settings().api.url))
    run = tiny_run(shard_size=32, max_images=96)
    reference = fit_reference_flow(
        [str(SAMPLES / "reference.parquet")], str(tmp_path / "ref"), tiny_config, run=run
    )
    incoming = [str(SAMPLES / "incoming.parquet")]
    threads = screen_flow(incoming, reference, str(tmp_path / "threads"), run=run)
    state = screen_flow.with_options(task_runner=task_runner("dask", workers=2))(
        incoming, reference, str(tmp_path / "dask"), run=run, return_state=True
    )
    dask = state.result()
    a = pl.read_parquet(threads["scores"]).sort("uri", "row")
    b = pl.read_parquet(dask["scores"]).sort("uri", "row")
    assert len(b) == 96 and a.select("uri", "row", "sha256").equals(
        b.select("uri", "row", "sha256")
    )
    assert a["score"].to_list() == b["score"].to_list()
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])
            )
        )
    shards = [r for r in runs if r.task_key.startswith("featurize_shard_task")]
    assert len(shards) == 3 and all(r.state.is_completed() and r.run_count == 1 for r in shards)
    assert len(list((tmp_path / "dask" / "shards").rglob("shard-*.parquet"))) == 3


def test_a_local_cluster_has_one_worker_per_gpu(monkeypatch) -> None:
    """Never two processes on one GPU, nor two torch processes fighting for a CPU's cores."""
    from diffpath.model.diffusion import gpu_count
    from diffpath_flows.pipeline import task_runner

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    assert task_runner("dask").cluster_kwargs["n_workers"] == max(1, gpu_count())
    assert task_runner("dask", workers=3).cluster_kwargs["n_workers"] == 3


def test_dask_runner_needs_a_reachable_prefect_server(monkeypatch) -> None:
    from diffpath.errors import ConfigError
    from diffpath_flows.pipeline import task_runner

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with pytest.raises(ConfigError, match="PREFECT_API_URL"):
        task_runner("dask")


def _shards(out) -> list:
    return list((out / "shards").rglob("shard-*.parquet"))


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_separate_scheduler_survives_a_killed_worker(tmp_path, tiny_reference, monkeypatch):
    """`dask scheduler` and two `dask worker` processes, as on a real cluster: one worker is
    killed mid-run, its shards rerun on the other, and nothing is lost or duplicated."""
    import subprocess
    import sys
    import threading
    import time

    from distributed import Client
    from prefect.settings import get_current_settings

    from diffpath_flows.pipeline import RunOptions, screen_flow, task_runner

    monkeypatch.setenv("PREFECT_API_URL", str(get_current_settings().api.url))
    address = f"tcp://127.0.0.1:{_free_port()}"
    host, port = address.removeprefix("tcp://").split(":")
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "distributed.cli.dask_scheduler",
                "--host",
                host,
                "--port",
                port,
                "--no-dashboard",
            ]
        )
    ]
    client = None
    try:
        client = Client(address, timeout=60)
        processes += [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "distributed.cli.dask_worker",
                    address,
                    "--nthreads",
                    "1",
                    "--no-dashboard",
                    "--name",
                    f"w{i}",
                ]
            )
            for i in range(2)
        ]
        client.wait_for_workers(2, timeout=120)
        doomed = next(a for a, w in client.scheduler_info()["workers"].items() if w["name"] == "w0")
        run = RunOptions(shard_size=8, max_images=96)
        incoming = [str(SAMPLES / "incoming.parquet")]
        threads = screen_flow(incoming, tiny_reference, str(tmp_path / "threads"), run=run)
        outcome: dict = {}

        def screen() -> None:
            flow = screen_flow.with_options(task_runner=task_runner(address=address))
            outcome["outputs"] = flow(incoming, tiny_reference, str(tmp_path / "dask"), run=run)
            outcome["ended"] = time.time()

        started = threading.Thread(target=screen)
        started.start()
        deadline = time.time() + 300
        while not (client.processing().get(doomed) and _shards(tmp_path / "dask")):
            assert time.time() < deadline and started.is_alive(), outcome
            time.sleep(0.01)
        processes[1].kill()  # w0 dies with a shard in hand
        lost = time.time()
        started.join(300)
        assert not started.is_alive() and "outputs" in outcome
        a = pl.read_parquet(threads["scores"]).sort("uri", "row")
        b = pl.read_parquet(outcome["outputs"]["scores"]).sort("uri", "row")
        assert len(b) == 96 and a.select("uri", "row", "sha256").equals(
            b.select("uri", "row", "sha256")
        )
        assert a["score"].to_list() == b["score"].to_list()  # bit-identical to threads
        assert len(_shards(tmp_path / "dask")) == 12 and outcome["ended"] > lost
    finally:
        if client is not None:
            client.close()
        for process in processes:
            process.kill()
