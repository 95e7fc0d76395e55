"""Feature shards on a real Dask LocalCluster (2 process workers) reporting to a real Prefect
server: every shard runs exactly once, and the scores equal a threads-runner run's."""

from __future__ import annotations

import polars as pl
import pytest

from tests.conftest import SAMPLES

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def test_screen_on_a_dask_cluster_equals_threads(tmp_path, tiny_config, monkeypatch) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.settings import get_current_settings

    from flows.pipeline import RunOptions, fit_reference_flow, screen_flow, task_runner

    # worker processes reach the session's Prefect test server through the environment
    monkeypatch.setenv("PREFECT_API_URL", str(get_current_settings().api.url))
    run = RunOptions(shard_size=32, max_images=96)
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


def test_dask_runner_needs_a_reachable_prefect_server(monkeypatch) -> None:
    from diffpath.errors import ConfigError
    from flows.pipeline import task_runner

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with pytest.raises(ConfigError, match="PREFECT_API_URL"):
        task_runner("dask")
