"""Runs that die half-way, and caches that get damaged: the next run completes with the
same outputs as an uninterrupted one — nothing lost, duplicated or half-read."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tests.conftest import SAMPLES

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

INCOMING = str(SAMPLES / "incoming.parquet")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_config, tiny_run) -> str:
    from diffpath_flows.pipeline import fit_reference_flow

    out = tmp_path_factory.mktemp("ref")
    return fit_reference_flow(
        [str(SAMPLES / "reference.parquet")],
        str(out),
        tiny_config,
        holdout=0.5,
        run=tiny_run(max_images=40),
    )


def uninterrupted(reference: str, out: Path) -> pl.DataFrame:
    from diffpath_flows.pipeline import RunOptions, screen_flow

    outputs = screen_flow([INCOMING], reference, str(out), run=RunOptions(shard_size=16))
    return pl.read_parquet(outputs["scores"]).sort("uri", "row")


@pytest.mark.hostile(
    ("fault: kill -9 during feature extraction", "a rerun equals an uninterrupted run"),
)
def test_sigkill_during_features_then_rerun_equals_an_uninterrupted_run(
    tmp_path, reference
) -> None:
    out, cache = tmp_path / "out", tmp_path / "cache"
    command = [
        sys.executable,
        "-m",
        "diffpath_flows.cli",
        "screen",
        INCOMING,
        "--reference",
        reference,
        "--out",
        str(out),
        "--features",
        str(cache),
        "--shard-size",
        "16",
    ]
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home")}
    env.pop("PREFECT_API_URL", None)  # its own in-process server, as a user's CLI run
    victim = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while not list((out / "shards").rglob("shard-00001.parquet")):  # mid-way: 2 of 8 shards
        assert victim.poll() is None and time.time() < deadline, "the run ended too early"
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (out / "scores.parquet").exists()
    rerun = subprocess.run(command, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "from the cache" in rerun.stderr
    resumed = pl.read_parquet(out / "scores.parquet").sort("uri", "row")
    expected = uninterrupted(reference, tmp_path / "clean")
    assert len(resumed) == 120 and resumed.select("uri", "row").n_unique() == 120
    assert resumed.select("uri", "row", "sha256").equals(expected.select("uri", "row", "sha256"))
    np.testing.assert_allclose(resumed["score"], expected["score"], rtol=1e-4)


@pytest.mark.hostile(
    ("fault: a damaged shard, cache segment and cache index", "recomputed, never trusted"),
)
def test_a_damaged_shard_segment_or_index_is_recomputed_not_trusted(tmp_path, reference) -> None:
    from diffpath.features.cache import compact_caches
    from diffpath_flows.pipeline import RunOptions, screen_flow

    run = RunOptions(shard_size=16, features_root=str(tmp_path / "cache"), max_images=48)
    first = screen_flow([INCOMING], reference, str(tmp_path / "out"), run=run)
    shard = next((tmp_path / "out" / "shards").rglob("shard-00000.parquet"))
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    compact_caches(str(tmp_path / "cache"))  # what the next run would do first
    (segment, *_) = sorted((tmp_path / "cache").rglob("segments/*/*.parquet"))
    (index,) = (tmp_path / "cache").rglob("index/*.parquet")
    for damaged in (segment, index):
        damaged.write_bytes(damaged.read_bytes()[:7])
    second = screen_flow([INCOMING], reference, str(tmp_path / "out"), run=run)
    summary = pl.read_json(second["summary"])
    assert summary["features_computed"][0] == 16  # exactly the damaged segment's shard
    a = pl.read_parquet(first["scores"]).sort("uri", "row")
    b = pl.read_parquet(second["scores"]).sort("uri", "row")
    assert a.select("uri", "row", "sha256").equals(b.select("uri", "row", "sha256"))
    np.testing.assert_allclose(a["score"], b["score"], rtol=1e-4)


@pytest.mark.hostile(
    ("fault: a second run into the same `--out`", "refused; a dead run's lock taken over"),
)
def test_a_second_writer_is_refused_and_a_dead_ones_lock_taken_over(tmp_path, reference) -> None:
    from diffpath.io.lock import LOCK, LockedError
    from diffpath_flows.pipeline import RunOptions, screen_flow
    from tests.unit.io.test_lock import write_lease

    out = tmp_path / "out"
    run = RunOptions(max_images=8)
    screen_flow([INCOMING], reference, str(out), run=run)
    assert not list((out / LOCK).iterdir())  # released when the run ended
    before = (out / "scores.parquet").read_bytes()
    write_lease(out)  # a live run of this process holds it
    with pytest.raises(LockedError, match="another run \\(id abc"):
        screen_flow([INCOMING], reference, str(out), run=run)
    assert (out / "scores.parquet").read_bytes() == before  # nothing of the second run mixed in
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    write_lease(out, pid=gone.pid)
    screen_flow([INCOMING], reference, str(out), run=run)
    assert not list((out / LOCK).iterdir())
