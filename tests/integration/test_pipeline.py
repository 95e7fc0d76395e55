"""fit-reference → screen → audit → evaluate end to end on local storage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from diffpath.featurestore import read_features

from diffpath.errors import ConfigMismatchError
from diffpath.sources import list_source, read_refs
from tests.conftest import N_INCOMING, SAMPLES

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_harness")]

REFERENCE = str(SAMPLES / "reference.parquet")
INCOMING = str(SAMPLES / "incoming.parquet")


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, tiny_config) -> tuple[Path, str]:
    from flows.pipeline import RunOptions, fit_reference_flow

    out = tmp_path_factory.mktemp("run")
    reference = fit_reference_flow(
        [REFERENCE], str(out / "ref"), tiny_config, run=RunOptions(max_images=80, shard_size=32)
    )
    return out, reference


def test_fit_then_screen_writes_readable_outputs(fitted, tiny_config) -> None:
    from flows.pipeline import RunOptions, screen_flow

    out, reference = fitted
    outputs = screen_flow([INCOMING], reference, str(out / "screen"), run=RunOptions(shard_size=64))
    scores = pl.read_parquet(outputs["scores"])
    assert scores.columns == ["path", "score", "flagged", "rank"]
    assert len(scores) == N_INCOMING
    assert scores["rank"].to_list() == list(range(1, N_INCOMING + 1))
    assert scores["score"].is_sorted(descending=True)
    assert pl.read_parquet(outputs["errors"]).height == 0
    summary = json.loads(Path(outputs["summary"]).read_text())
    assert summary["n_images"] == N_INCOMING and summary["config_hash"] == tiny_config.config_hash()
    assert summary["n_flagged"] == scores["flagged"].sum()
    html = Path(outputs["report"]).read_text()
    assert "data:image/png;base64" in html and "faces/" in html


def test_rerun_skips_every_shard_and_gives_identical_scores(fitted, tiny_config) -> None:
    from flows.pipeline import RunOptions, screen_flow

    out, reference = fitted
    first = screen_flow([INCOMING], reference, str(out / "again"), run=RunOptions(shard_size=64))
    shards = sorted((out / "again" / "features").rglob("shard-*.parquet"))
    stamps = [p.stat().st_mtime_ns for p in shards]
    second = screen_flow([INCOMING], reference, str(out / "again"), run=RunOptions(shard_size=64))
    assert [p.stat().st_mtime_ns for p in shards] == stamps  # nothing recomputed
    a, b = pl.read_parquet(first["scores"]), pl.read_parquet(second["scores"])
    assert a.equals(b)


def test_unreadable_images_are_recorded_not_fatal(tmp_path, fitted) -> None:
    from flows.pipeline import screen_flow

    folder = tmp_path / "dump"
    (folder / "sub").mkdir(parents=True)
    items, _ = read_refs(list_source(INCOMING)[:5])
    for i, (_, data) in enumerate(items):
        (folder / "sub" / f"{i}.PNG").write_bytes(data)
    (folder / "broken.jpg").write_bytes(b"truncated")
    (folder / "notes.txt").write_text("not an image, not listed")
    outputs = screen_flow([str(folder)], fitted[1], str(tmp_path / "out"))
    assert pl.read_parquet(outputs["scores"]).height == 5
    errors = pl.read_parquet(outputs["errors"])
    assert errors["path"].to_list() == ["broken.jpg"] and "broken.jpg" in errors["error"][0]


def test_parquet_and_folder_sources_give_the_same_features(tmp_path, tiny_config) -> None:
    from flows.pipeline import RunOptions, featurize

    refs = list_source(INCOMING)[:12]
    items, _ = read_refs(refs)
    for key, data in items:  # the folder holds the same bytes under the Parquet `path` keys
        (tmp_path / "folder" / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "folder" / key).write_bytes(data)

    from prefect import flow

    @flow
    def both() -> tuple[list[str], list[str]]:
        folder = featurize(
            [str(tmp_path / "folder")], tiny_config, str(tmp_path / "a"), RunOptions(shard_size=64)
        )
        parquet = featurize([INCOMING], tiny_config, str(tmp_path / "b"), RunOptions(shard_size=64))
        return folder[1], parquet[1]

    folder_uris, parquet_uris = both()
    a = read_features(folder_uris, tiny_config.config_hash())[0].sort("path")
    b = read_features(parquet_uris, tiny_config.config_hash())[0].sort("path")
    b = b.filter(pl.col("path").is_in(set(a["path"])))  # the 12 images the folder holds
    assert a["path"].to_list() == b["path"].to_list() and len(a) == 12
    np.testing.assert_allclose(
        a.drop("path", "error").to_numpy(), b.drop("path", "error").to_numpy(), rtol=1e-5
    )


def test_screen_with_another_config_is_refused(fitted, tiny_config) -> None:
    from flows.pipeline import RunOptions, screen_flow

    out, reference = fitted
    other = tiny_config.model_copy(update={"timesteps": 4})
    with pytest.raises(ConfigMismatchError):
        screen_flow([INCOMING], reference, str(out / "other"), other, run=RunOptions(max_images=10))


def test_audit_and_evaluate(tmp_path, fitted, tiny_config) -> None:
    from flows.pipeline import RunOptions, audit_flow, evaluate_flow

    audit = audit_flow([INCOMING], str(tmp_path / "audit"), tiny_config, folds=3)
    summary = json.loads(Path(audit["summary"]).read_text())
    assert 0 <= summary["estimated_contamination"] <= 1 and summary["n_scored"] == N_INCOMING
    assert Path(audit["report"]).exists()
    result = evaluate_flow(
        [REFERENCE],
        {"incoming": [INCOMING]},
        fitted[1],
        str(tmp_path / "eval"),
        run=RunOptions(max_images=40),
    )
    metrics = json.loads(Path(result["metrics"]).read_text())
    assert 0 <= metrics["ood"]["incoming"]["auroc"] <= 1
    assert "AUROC" in Path(result["report"]).read_text()
