"""The Python API: the CLI's numbers and files from a folder, a list or in-memory images;
bad files are error rows; a reference fitted by either is loaded by the other."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image
from typer.testing import CliRunner

import diffpath
from diffpath.errors import ConfigError
from diffpath.io.sources import list_source, read_refs
from diffpath_flows.cli import app
from tests.conftest import SAMPLES

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_harness")]

INCOMING = str(SAMPLES / "incoming.parquet")


@pytest.fixture(scope="module")
def api_run(tiny_model_dir):
    return diffpath.Run(model=str(tiny_model_dir), batch_size=32, max_images=24, progress=False)


@pytest.fixture(scope="module")
def cli_screen(tmp_path_factory, tiny_reference) -> Path:
    out = tmp_path_factory.mktemp("cli") / "screen"
    args = ["screen", INCOMING, "--reference", tiny_reference, "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--max-images", "24", "--fpr", "0.1"])
    assert result.exit_code in (0, 3), result.output
    return out


def test_api_scores_equal_the_cli_and_write_gives_the_cli_files(
    tmp_path, tiny_reference, api_run, cli_screen
) -> None:
    ref = diffpath.load_reference(tiny_reference)
    result = ref.screen(INCOMING, fpr=0.1, run=api_run)
    cli = pl.read_parquet(cli_screen / "scores.parquet")
    assert result.scores.select("uri", "row", "sha256", "rank", "flagged").equals(
        cli.select("uri", "row", "sha256", "rank", "flagged")
    )
    np.testing.assert_allclose(result.scores["score"], cli["score"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(result.scores["p_value"], cli["p_value"], rtol=0, atol=1e-6)
    written = result.write(tmp_path / "api")
    names = {Path(uri).name for uri in written.values()}
    assert names == {
        "scores.parquet",
        "errors.parquet",
        "duplicates.parquet",
        "flagged.txt",
        "flagged.csv",
        "summary.json",
        "report.html",
    }
    for name in names - {"summary.json", "report.html"}:
        assert (tmp_path / "api" / name).read_bytes() == (cli_screen / name).read_bytes(), name
    ours, theirs = (
        json.loads((d / "summary.json").read_text()) for d in (tmp_path / "api", cli_screen)
    )
    varying = {"started_at", "wall_seconds", "reference", "sources"}
    assert {k: v for k, v in ours.items() if k not in varying} == {
        k: v for k, v in theirs.items() if k not in varying
    }
    assert result.flagged_uris() == (cli_screen / "flagged.txt").read_text().splitlines()


def test_in_memory_images_and_a_bad_file_become_rows(tmp_path, tiny_reference, api_run) -> None:
    ref = diffpath.load_reference(tiny_reference)
    data = read_refs(list_source(INCOMING)[:4])
    pictures = [Image.open(io.BytesIO(d)).convert("RGB") for d in data]
    arrays = [np.asarray(p) for p in pictures]
    from_pil, from_arrays = ref.screen(pictures, run=api_run), ref.screen(arrays, run=api_run)
    assert from_pil.scores["path"].sort().to_list() == [f"image-{i:06d}.png" for i in range(4)]
    assert from_pil.scores.equals(from_arrays.scores.with_columns(uri=from_pil.scores["uri"]))
    folder = tmp_path / "dump"
    folder.mkdir()
    for i, d in enumerate(data):
        (folder / f"{i}.jpg").write_bytes(d)
    (folder / "empty.jpg").write_bytes(b"")
    result = ref.screen(
        [str(folder / f"{i}.jpg") for i in range(4)] + [str(folder / "empty.jpg")], run=api_run
    )
    assert len(result.scores) == 4 and result.errors["path"].to_list() == ["empty.jpg"]
    assert "empty file" in result.errors["error"][0]
    with pytest.raises(ConfigError, match="not a mix"):
        ref.screen([str(folder / "0.jpg"), pictures[0]], run=api_run)
    for bad in (np.full((8, 8, 3), 2.0), np.full((8, 8, 3), np.nan)):
        with pytest.raises(ConfigError, match="floats in"):
            ref.screen([bad], run=api_run)


def test_fit_save_audit_and_evaluate(tmp_path, api_run, tiny_model_dir) -> None:
    run = diffpath.Run(model=str(tiny_model_dir), batch_size=32, max_images=40, progress=False)
    ref = diffpath.fit_reference(
        str(SAMPLES / "reference.parquet"), method="diffpathv2", timesteps=3, holdout=0.5, run=run
    )
    saved = ref.save(tmp_path / "reference.json")
    again = diffpath.load_reference(saved)
    assert again.threshold == ref.threshold and again.config == ref.config
    audit = again.audit(INCOMING, run=api_run)
    assert 0 <= audit.summary["estimated_contamination"] <= 1
    assert set(audit.write(tmp_path / "audit")) >= {"scores", "summary", "report"}
    evaluation = diffpath.evaluate(
        again, str(SAMPLES / "reference.parquet"), {"incoming": INCOMING}, run=api_run
    )
    assert evaluation.metrics["ood"].to_list() == ["incoming"]
    assert 0 <= evaluation.metrics["auroc"][0] <= 1
