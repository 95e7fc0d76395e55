"""Feature shards on a real Dask LocalCluster (process workers) via prefect-dask."""

from __future__ import annotations

import polars as pl
import pytest

from tests.conftest import SAMPLES

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def test_screen_flow_on_a_dask_cluster(tmp_path, tiny_config, monkeypatch) -> None:
    from prefect.settings import get_current_settings
    from prefect_dask import DaskTaskRunner

    from flows.pipeline import RunOptions, fit_reference_flow, screen_flow

    # worker processes reach the session's Prefect test server through the environment
    monkeypatch.setenv("PREFECT_API_URL", str(get_current_settings().api.url))
    runner = DaskTaskRunner(
        cluster_kwargs={
            "n_workers": 2,
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": None,
        }
    )
    reference = fit_reference_flow(
        [str(SAMPLES / "reference.parquet")],
        str(tmp_path / "ref"),
        tiny_config,
        run=RunOptions(shard_size=32, max_images=64),
    )
    outputs = screen_flow.with_options(task_runner=runner)(
        [str(SAMPLES / "incoming.parquet")],
        reference,
        str(tmp_path / "screen"),
        run=RunOptions(shard_size=32, max_images=64),
    )
    scores = pl.read_parquet(outputs["scores"])
    assert len(scores) == 64 and scores["score"].is_finite().all()
    shards = list((tmp_path / "screen" / "shards").rglob("shard-*.parquet"))
    assert len(shards) == 2  # two shards, computed by the cluster's worker processes
