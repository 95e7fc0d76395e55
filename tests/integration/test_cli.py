"""The CLI's exit codes and one-line reasons."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from flows.cli import app
from tests.conftest import SAMPLES

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_harness")]
runner = CliRunner()


def test_every_command_has_help() -> None:
    for command in ["fit-reference", "screen", "audit", "evaluate", "train", "demo"]:
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output


def test_missing_source_exits_1_with_reason(tmp_path, tiny_model_dir) -> None:
    result = runner.invoke(
        app,
        [
            "fit-reference",
            str(tmp_path / "nowhere"),
            "--out",
            str(tmp_path / "o"),
            "--model",
            str(tiny_model_dir),
        ],
    )
    assert result.exit_code == 1
    assert "does not exist" in result.output.strip().splitlines()[-1]


def test_bad_option_exits_2(tmp_path) -> None:
    result = runner.invoke(
        app, ["fit-reference", str(SAMPLES), "--out", str(tmp_path), "--timesteps", "1"]
    )
    assert result.exit_code == 2 and "timesteps" in result.output


def test_fit_then_screen_and_mismatched_config(tmp_path, tiny_model_dir) -> None:
    ref = tmp_path / "ref"
    fit = runner.invoke(
        app,
        [
            "fit-reference",
            str(SAMPLES / "reference.parquet"),
            "--out",
            str(ref),
            "--model",
            str(tiny_model_dir),
            "--timesteps",
            "3",
            "--max-images",
            "40",
        ],
    )
    assert fit.exit_code == 0, fit.output
    screen = runner.invoke(
        app,
        [
            "screen",
            str(SAMPLES / "incoming.parquet"),
            "--reference",
            str(ref / "reference.json"),
            "--out",
            str(tmp_path / "s"),
            "--max-images",
            "30",
        ],
    )
    assert screen.exit_code == 0, screen.output
    assert json.loads((tmp_path / "s" / "summary.json").read_text())["n_images"] == 30
    mismatch = runner.invoke(
        app,
        [
            "screen",
            str(SAMPLES / "incoming.parquet"),
            "--reference",
            str(ref / "reference.json"),
            "--out",
            str(tmp_path / "m"),
            "--timesteps",
            "5",
        ],
    )
    assert mismatch.exit_code == 2
    assert "config" in mismatch.output.strip().splitlines()[-1]
