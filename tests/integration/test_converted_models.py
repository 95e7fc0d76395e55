"""A published-format checkpoint converted with `diffpath convert-model` screens end to end
through the CLI, at 32 px and at 64 px (DiffPath's 32-px-then-up protocol)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from diffpath_flows.cli import app
from tests.conftest import SAMPLES, SHARED_DATA

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_harness")]
runner = CliRunner()
FIXTURES = SHARED_DATA / "reference-unets"
TEXTURES = ("banded", "braided", "bubbly", "blotchy", "bumpy")


def cli(*args: str):
    result = runner.invoke(app, [str(a) for a in args])
    return result


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[int, Path]:
    """DiffPath's CelebA net (32 px) and improved-diffusion's ImageNet net (64 px), as the
    original code saves them (small random-weight fixtures), converted through the CLI."""
    if not FIXTURES.exists():
        pytest.skip(f"reference UNets not found at {FIXTURES} (../shared is absent)")
    out = tmp_path_factory.mktemp("converted")
    folders = {}
    for size, name in ((32, "diffpath_celeba32"), (64, "improved_imagenet64")):
        flags = FIXTURES / f"{name}.json"
        result = cli(
            "convert-model", FIXTURES / f"{name}.pt", "--flags", flags, "--out", out / name
        )
        assert result.exit_code == 0, result.output
        assert "next: diffpath fit-reference" in result.output
        folders[size] = out / name
    return folders


def fit(model: Path, out: Path, *extra: str):
    return cli(
        "fit-reference",
        SAMPLES / "reference.parquet",
        *("--model", model, "--out", out, "--timesteps", "3"),
        *("--max-images", "40", "--holdout", "0.5", *extra),
    )


@pytest.mark.parametrize("size", [32, 64])
def test_a_converted_model_fits_screens_and_evaluates(models, tmp_path, size) -> None:
    sizes = ("--image-size", "64", "--resize-via", "32") if size == 64 else ()
    fitted = fit(models[size], tmp_path / "ref", *sizes)
    assert fitted.exit_code == 0, fitted.output
    reference = json.loads((tmp_path / "ref" / "reference.json").read_text())
    assert reference["config"]["image_size"] == size
    screened = cli(
        "screen",
        SAMPLES / "incoming.parquet",
        *("--reference", tmp_path / "ref" / "reference.json", "--out", tmp_path / "screen"),
        *("--max-images", "30"),
    )
    assert screened.exit_code == 0, screened.output
    summary = json.loads((tmp_path / "screen" / "summary.json").read_text())
    assert summary["n_scored"] == 30 and summary["model_id"] == reference["model_id"]
    scores = pq.read_table(tmp_path / "screen" / "scores.parquet")
    assert all(v == v for v in scores["score"].to_pylist())  # finite, not NaN
    incoming = pq.read_table(SAMPLES / "incoming.parquet")
    textures = incoming.filter(
        pa.array([label in TEXTURES for label in incoming["label"].to_pylist()])
    )
    pq.write_table(textures, tmp_path / "textures.parquet")
    evaluated = cli(
        "evaluate",
        *("--in-dist", SAMPLES / "reference.parquet", "--ood", tmp_path / "textures.parquet"),
        *("--reference", tmp_path / "ref" / "reference.json", "--out", tmp_path / "eval"),
        *("--max-images", "30"),
    )
    assert evaluated.exit_code == 0, evaluated.output
    assert "AUROC" in evaluated.output


def test_a_64px_model_at_the_default_size_is_refused_with_the_flag(models, tmp_path) -> None:
    refused = fit(models[64], tmp_path / "ref")
    assert refused.exit_code == 2
    assert "--image-size 64" in refused.output.strip().splitlines()[-1]


def test_a_converted_model_runs_the_benchmark(models, tmp_path) -> None:
    incoming = pq.read_table(SAMPLES / "incoming.parquet")
    textures = incoming.filter(
        pa.array([label in TEXTURES for label in incoming["label"].to_pylist()])
    )
    pq.write_table(textures, tmp_path / "textures.parquet")
    (tmp_path / "spec.yaml").write_text(
        f"""
name: converted
datasets:
  faces: {{source: {SAMPLES / "reference.parquet"}}}
  textures: {{source: {tmp_path / "textures.parquet"}}}
sizes: {{fit: 30, validation: 10, test: 10}}
bootstrap: 100
methods:
  diffpath6d: {{config: {{method: diffpath6d, timesteps: 3}}}}
"""
    )
    result = cli(
        "benchmark", tmp_path / "spec.yaml", "--out", tmp_path / "bench", "--model", models[32]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "bench" / "summary.json").read_text())
    results = pq.read_table(tmp_path / "bench" / "results.parquet").to_pylist()
    assert {(r["in_dist"], r["ood"]) for r in results} == {
        ("faces", "textures"),
        ("textures", "faces"),
    }
    assert summary["methods"][0]["method"] == "diffpath6d"
