"""The CLI's exit codes and one-line reasons."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from diffpath.methods import METHODS
from diffpath.model.diffusion import native_bfloat16
from diffpath.scoring.nearcopy import NEAR_BITS
from diffpath_flows.cli import app
from diffpath_flows.options import RUN_OPTIONS
from diffpath_flows.run import RunOptions
from tests.conftest import SAMPLES, save_tiny_model, utc_day

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_harness")]
runner = CliRunner()


def test_every_command_has_help() -> None:
    for command in ["fit-reference", "screen", "audit", "evaluate", "benchmark", "train", "demo"]:
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


def test_fit_from_a_config_file_then_screen_and_other_weights(tmp_path, tiny_model_dir) -> None:
    ref = tmp_path / "ref"
    settings = f"model: {tiny_model_dir}\ntimesteps: 3\nholdout: 0.5\n"  # every flag is a key
    (tmp_path / "features.yaml").write_text(settings)
    fit = runner.invoke(
        app,
        [
            "fit-reference",
            str(SAMPLES / "reference.parquet"),
            "--out",
            str(ref),
            "--config",
            str(tmp_path / "features.yaml"),
            "--timesteps",
            "4",  # a flag overrides the file
            "--max-images",
            "40",
        ],
    )
    assert fit.exit_code == 0, fit.output
    assert len(json.loads((ref / "reference.json").read_text())["calibration_scores"]) == 20
    assert "calibration: 20 held-back images (random split); p-values down to 1/21" in fit.output
    fitted = json.loads((ref / "reference.json").read_text())
    assert (fitted["model"], fitted["config"]["timesteps"]) == (str(tiny_model_dir), 4)
    native = native_bfloat16(torch.device("cpu"))  # dtype auto, resolved and recorded
    assert fitted["config"]["dtype"] == ("bfloat16" if native else "float32")
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
    assert "features computed for 30, 0 from the cache" in screen.output
    assert json.loads((tmp_path / "s" / "summary.json").read_text())["n_images"] == 30
    other = save_tiny_model(tmp_path / "other", out_channels=6)
    mismatch = runner.invoke(
        app,
        [
            "screen",
            str(SAMPLES / "incoming.parquet"),
            "--reference",
            str(ref / "reference.json"),
            "--out",
            str(tmp_path / "m"),
            "--model",
            str(other),
        ],
    )
    assert mismatch.exit_code == 2
    assert "fitted with model" in mismatch.output.strip().splitlines()[-1]


def test_screen_takes_no_feature_options(tmp_path) -> None:
    result = runner.invoke(
        app,
        [
            "screen",
            str(SAMPLES),
            "--reference",
            "r.json",
            "--out",
            str(tmp_path),
            "--timesteps",
            "5",
        ],
    )
    assert result.exit_code == 2 and "No such option" in result.output


def test_train_channels_default_is_the_train_config_default() -> None:
    from diffpath.model.train import TrainConfig

    default = ",".join(map(str, TrainConfig(data=["x"]).block_out_channels))
    assert default in runner.invoke(app, ["train", "--help"]).output.replace(" ", "")


def test_feature_options_state_the_config_defaults() -> None:
    from diffpath.config import FeatureConfig

    shown = runner.invoke(app, ["fit-reference", "--help"], env={"COLUMNS": "240"}).output
    help_text = " ".join(shown.replace("│", " ").split())
    default = FeatureConfig()
    methods = " | ".join(METHODS)
    assert f"feature method: {methods} [default: ({default.method})]" in help_text
    assert f"{default.method} {default.timesteps} [default: ({default.timesteps})]" in help_text
    shard_size = RunOptions.model_fields["shard_size"].default
    assert f"images per shard task [default: ({shard_size})]" in help_text


@pytest.mark.parametrize("command", ["fit-reference", "screen", "audit", "evaluate", "benchmark"])
def test_run_options_come_from_one_definition(command) -> None:
    """Every pipeline command offers RunOptions' fields (benchmark: not --max-images)."""
    shown = runner.invoke(app, [command, "--help"], env={"COLUMNS": "240"}).output
    flags = {
        "--features" if n == "features_root" else "--" + n.replace("_", "-") for n in RUN_OPTIONS
    }
    if command == "benchmark":
        flags.remove("--max-images")
    assert all(flag in shown for flag in [*flags, "--config"]), shown
    assert ("--max-images" in shown) == (command != "benchmark")


def test_a_config_file_sets_run_options_and_refuses_unknown_keys(tmp_path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("shard_size: 0\n")  # a run option from the file is validated as one
    args = ["screen", str(SAMPLES), "--reference", "r.json", "--out", str(tmp_path), "--config"]
    result = runner.invoke(app, [*args, str(config)])
    assert result.exit_code == 2
    assert "invalid option --shard-size (config key shard_size)" in result.output
    result = runner.invoke(app, [*args, str(config), "--shard-size", "8", "--max-images", "0"])
    assert "max_images" in result.output and "shard_size" not in result.output  # flags win
    config.write_text("method: diffpath6d\n")  # screen takes its feature config from the reference
    result = runner.invoke(app, [*args, str(config)])
    assert result.exit_code == 2 and "method: not options of this command" in result.output
    config.write_text("fpr: 2\n")  # every flag of screen is a key of its --config
    result = runner.invoke(app, [*args, str(config)])
    assert result.exit_code == 2 and "--fpr (config key fpr)" in result.output
    assert "ScreenPolicy" not in result.output
    config.write_text("alert_p: 0.01\nfail_above: 0.5\nmax_errors: 0.1\n")
    result = runner.invoke(app, [*args, str(config)])
    assert "not options" not in result.output and "r.json" in result.output  # the next check
    result = runner.invoke(app, [*args, str(config), "--fpr", "0.1", "--threshold", "70"])
    assert result.exit_code == 2 and "not both" in result.output


def test_train_from_a_config_file_with_per_source_crops(tmp_path) -> None:
    import yaml

    recipe = {
        "data": [
            {"uri": str(SAMPLES / "reference.parquet")},
            {"uri": str(SAMPLES / "incoming.parquet"), "crop": [0.1, 0.1, 0.9, 0.9]},
        ],
        "block_out_channels": [8, 16],
        "batch_size": 4,
        "max_images": 4,
        "checkpoint_every": 1,
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    out = tmp_path / "model"
    args = ["train", "--config", str(tmp_path / "recipe.yaml"), "--out", str(out), "--steps", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"next: diffpath fit-reference TRUSTED --model {out}" in result.output
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["steps"] == 2 and saved["data"][1]["crop"] == [0.1, 0.1, 0.9, 0.9]
    assert saved["data"][0]["crop"] is None  # no crop unless a recipe says one
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**recipe, "dropuot": 0.1}))
    result = runner.invoke(app, ["train", "--config", str(tmp_path / "bad.yaml"), "--out", "x"])
    assert result.exit_code == 2 and "dropuot" in result.output.strip().splitlines()[-1]


def test_benchmark_sizes_must_be_three_counts(tmp_path) -> None:
    spec = str(tmp_path / "missing.yaml")
    result = runner.invoke(app, ["benchmark", spec, "--out", str(tmp_path), "--sizes", "10,5"])
    assert result.exit_code == 2 and "--sizes" in result.output.strip().splitlines()[-1]


def test_core_log_records_reach_prefect() -> None:
    import logging

    from prefect.logging.handlers import APILogHandler

    handlers = logging.getLogger("diffpath").handlers
    assert any(isinstance(handler, APILogHandler) for handler in handlers)
    assert logging.getLogger("diffpath.model.diffusion").isEnabledFor(logging.INFO)


def test_dask_runner_without_a_prefect_server_exits_2(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    result = runner.invoke(
        app, ["fit-reference", str(SAMPLES), "--out", str(tmp_path), "--runner", "dask"]
    )
    assert result.exit_code == 2 and "PREFECT_API_URL" in result.output.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def dated_reference(tmp_path_factory, tiny_model_dir) -> tuple[Path, str]:
    """A tiny reference fitted by the CLI into a dated folder: (its root, reference.json)."""
    root = tmp_path_factory.mktemp("dated")
    days = {utc_day()}  # the run's date, and the next one if it runs across midnight
    fit = runner.invoke(
        app,
        [
            "fit-reference",
            str(SAMPLES / "reference.parquet"),
            "--out",
            str(root / "ref" / "{date}"),
            *["--model", str(tiny_model_dir), "--timesteps", "3", "--max-images", "40"],
            *["--holdout", "0.5"],
        ],
    )
    assert fit.exit_code == 0, fit.output
    days.add(utc_day())
    latest = json.loads((root / "ref" / "latest.json").read_text())["out"]
    assert latest in {str(root / "ref" / day) for day in days}
    return root, f"{latest}/reference.json"


def test_a_dated_screen_that_alerts_exits_3_after_writing_outputs(dated_reference) -> None:
    root, reference = dated_reference
    screen = runner.invoke(
        app,
        [
            "screen",
            str(SAMPLES / "incoming.parquet"),
            *["--reference", reference, "--out", str(root / "s" / "{date}")],
            *["--max-images", "10", "--threshold", "-1e9", "--fail-above", "0.2"],
        ],
    )
    assert screen.exit_code == 3, screen.output
    assert screen.output.strip().splitlines()[-1].startswith("alert: 100.0% flagged")
    assert "10 images: 10 flagged" in screen.output and "Traceback" not in screen.output
    out = Path(json.loads((root / "s" / "latest.json").read_text())["out"])
    assert (out / "scores.parquet").exists() and str(out) in screen.output
    history = pq.read_table(root / "s" / "history.parquet").to_pylist()
    assert [(h["folder"], h["n_flagged"], h["n_alerts"]) for h in history] == [(str(out), 10, 1)]
    assert "Nights screened (1 most recent)" in (out / "report.html").read_text()


def test_a_leak_check_exits_3_naming_the_copies(dated_reference, tmp_path) -> None:
    incoming = pq.read_table(SAMPLES / "incoming.parquet").slice(0, 8)
    (tmp_path / "test-set").mkdir()
    pq.write_table(incoming.slice(0, 3), tmp_path / "test-set" / "held-out.parquet")
    pq.write_table(incoming, tmp_path / "dump.parquet")
    screen_dump = ["screen", str(tmp_path / "dump.parquet"), "--reference", dated_reference[1]]
    missing = runner.invoke(
        app, [*screen_dump, "--out", str(tmp_path / "x"), "--leak-check", str(tmp_path / "no")]
    )
    assert missing.exit_code == 1 and "/no' does not exist" in missing.output.splitlines()[-1]
    screen = runner.invoke(
        app,
        [*screen_dump, "--out", str(tmp_path / "s"), "--leak-check", str(tmp_path / "test-set")],
    )
    assert screen.exit_code == 3, screen.output
    assert "leak check: 3 near copies of 3 protected images" in screen.output
    assert screen.output.strip().splitlines()[-1].startswith("alert: 3 images are near copies")
    leaks = pq.read_table(tmp_path / "s" / "leaks.parquet").to_pylist()
    assert [(r["row"], r["protected_row"], r["distance"]) for r in leaks] == [
        (0, 0, 0),
        (1, 1, 0),
        (2, 2, 0),
    ]
    assert json.loads((tmp_path / "s" / "summary.json").read_text())["near_bits"] == NEAR_BITS
    protected = ["--leak-check", str(tmp_path / "test-set")]
    exact = runner.invoke(
        app, [*screen_dump, "--out", str(tmp_path / "e"), *protected, "--near-bits", "0"]
    )
    assert exact.exit_code == 3 and "leak check: 3 near copies" in exact.output
    assert json.loads((tmp_path / "e" / "summary.json").read_text())["near_bits"] == 0
    too_far = runner.invoke(app, [*screen_dump, "--out", str(tmp_path / "f"), "--near-bits", "9"])
    assert too_far.exit_code == 2 and "near_bits" in too_far.output.splitlines()[-1]


@pytest.mark.hostile(
    (
        "two `--ood` sets both `test.parquet`, one under `date=2026-12-01/`",
        "named apart by their folders; two sets of one name refused",
    ),
)
def test_evaluate_names_sets_that_share_a_file_name_apart(dated_reference, tmp_path) -> None:
    incoming = pq.read_table(SAMPLES / "incoming.parquet")
    for name, start in (("a", 0), ("b", 10), ("date=2026-12-01", 20)):
        (tmp_path / name).mkdir()
        pq.write_table(incoming.slice(start, 6 + start // 10), tmp_path / name / "test.parquet")
    sets = [str(tmp_path / name / "test.parquet") for name in ("a", "b", "date=2026-12-01")]
    args = ["evaluate", "--in-dist", str(SAMPLES / "reference.parquet"), "--max-images", "12"]
    args += ["--reference", dated_reference[1], "--out", str(tmp_path / "e")]
    result = runner.invoke(app, [*args, *(f for s in sets for f in ("--ood", s))])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())["ood"]
    assert {name: m["n"] for name, m in metrics.items()} == {"a": 6, "b": 7, "date=2026-12-01": 8}
    twice = runner.invoke(app, [*args, "--ood", f"a={sets[0]}", "--ood", f"a={sets[1]}"])
    assert twice.exit_code == 2
    assert "2 sources are named 'a'" in twice.output.strip().splitlines()[-1]


def test_version_and_a_help_that_loads_no_heavy_module() -> None:
    import subprocess
    import sys

    import diffpath

    assert runner.invoke(app, ["--version"]).output.strip() == f"diffpath {diffpath.__version__}"
    probe = "import sys, diffpath_flows.cli; print(sorted({'torch', 'prefect'} & set(sys.modules)))"
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert loaded.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "options, code, reason",
    [
        (["--device", "cuda:7"], 1, "CUDA GPUs; use --device cpu"),
        (["--device", "tpu"], 1, "unknown device 'tpu'"),
        (["--shard-size", "0"], 2, "invalid option --shard-size (config key shard_size)"),
    ],
)
def test_run_options_fail_with_one_line_naming_them(tmp_path, options, code, reason) -> None:
    result = runner.invoke(
        app, ["fit-reference", str(SAMPLES / "reference.parquet"), "--out", str(tmp_path), *options]
    )
    assert result.exit_code == code, result.output
    assert reason in result.output.strip().splitlines()[-1]


@pytest.mark.parametrize(
    "options, reason",
    [
        pytest.param(
            options,
            reason,
            marks=pytest.mark.hostile(
                (f"`fit-reference {' '.join(options)}`", "refused before any feature work")
            ),
        )
        for options, reason in [
            (["--target-fpr", "0"], "--target-fpr must be in (0, 1), got 0.0"),
            (["--target-fpr", "1.5"], "--target-fpr must be in (0, 1), got 1.5"),
            (["--holdout", "1"], "--holdout must be in (0, 1), got 1.0"),
            (["--density", "pickle"], "unknown density 'pickle'"),
            (["--max-images", "40"], "8 calibration images cannot flag at 0.05: that needs at"),
            (["--target-fpr", "0.001"], "24 calibration images cannot flag at 0.001"),
        ]
    ],
)
def test_fit_options_are_refused_before_any_feature_work(tmp_path, options, reason) -> None:
    args = ["fit-reference", str(SAMPLES / "reference.parquet"), "--out", str(tmp_path / "o")]
    result = runner.invoke(app, [*args, *options])
    assert result.exit_code == 2, result.output
    assert reason in result.output.strip().splitlines()[-1]
    assert not (tmp_path / "o" / "features").exists()


@pytest.mark.hostile(
    ("`screen --fpr 0.01` against a reference of 20 calibration images", "refused, exit 2")
)
def test_a_rate_finer_than_the_calibration_resolves_is_refused(dated_reference, tmp_path) -> None:
    args = ["screen", str(SAMPLES / "incoming.parquet"), "--reference", dated_reference[1]]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "s"), "--fpr", "0.01"])
    assert result.exit_code == 2, result.output
    assert "20 calibration images cannot flag at 0.01" in result.output.strip().splitlines()[-1]
    assert not (tmp_path / "s").exists()


def test_alert_p_alerts_on_more_flags_than_chance_explains(dated_reference, tmp_path) -> None:
    """13 of 20 flagged where half are expected: p ≈ 0.17 under the Beta-Binomial law of
    20 calibration scores, so --alert-p 0.01 stays quiet and --alert-p 0.5 alerts."""
    from diffpath.scoring.conformal import threshold_rule
    from diffpath.scoring.reference import load_reference

    args = ["screen", str(SAMPLES / "incoming.parquet"), "--reference", dated_reference[1]]
    args += ["--max-images", "20", "--fpr", "0.5"]
    quiet = runner.invoke(app, [*args, "--out", str(tmp_path / "q"), "--alert-p", "0.01"])
    assert quiet.exit_code == 0, quiet.output
    summary = json.loads((tmp_path / "q" / "summary.json").read_text())
    reference = load_reference(dated_reference[1])
    rule = threshold_rule(reference.calibration_scores, summary["threshold"])
    assert summary["expected_flagged_fraction"] == rule.rate == 10 / 21
    p = rule.p_value(summary["n_flagged"], 20)
    assert summary["flagged_p_value"] == p and 0.01 < p < 0.5 and summary["alerts"] == []
    loud = runner.invoke(app, [*args, "--out", str(tmp_path / "l"), "--alert-p", "0.5"])
    assert loud.exit_code == 3, loud.output
    assert loud.output.strip().splitlines()[-1].endswith("at most --alert-p 0.5")


def test_audit_prints_its_estimate_and_floor_or_why_there_is_none(
    dated_reference, tiny_model_dir, tmp_path
) -> None:
    args = ["audit", str(SAMPLES / "incoming.parquet"), "--max-images", "30"]
    trusted = runner.invoke(
        app, [*args, "--reference", dated_reference[1], "--out", str(tmp_path / "r")]
    )
    assert trusted.exit_code == 0, trusted.output
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    floor = f"below {summary['detectable_contamination']:.1%} is no evidence"
    assert "estimated contamination" in trusted.output and floor in trusted.output
    alone = runner.invoke(
        app,
        [*args, "--model", str(tiny_model_dir), "--timesteps", "3", "--out", str(tmp_path / "n")],
    )
    assert alone.exit_code == 0, alone.output
    assert "contamination undetermined: the out-of-fold scores" in alone.output


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(v, marks=pytest.mark.hostile((f"`screen --threshold {v}`", "refused, exit 2")))
        for v in ("nan", "inf", "-inf")
    ],
)
def test_a_non_finite_threshold_is_refused_before_any_work(tmp_path, value) -> None:
    args = ["screen", str(SAMPLES / "incoming.parquet"), "--reference", "r.json"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "s"), "--threshold", value])
    assert result.exit_code == 2, result.output
    assert (
        "--threshold (config key threshold): Input should be a finite number"
        in result.output.strip().splitlines()[-1]
    )
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    "args, reason",
    [
        (
            # 4 images: 1 held back, enough to flag at 50%
            [
                *["fit-reference", str(SAMPLES / "reference.parquet")],
                *["--device", "cuda:7", "--target-fpr", "0.5"],
            ],
            "error: device 'cuda:7' asked for",
        ),
        (
            ["screen", str(SAMPLES / "incoming.parquet"), "--reference", "nowhere/reference.json"],
            "error: cannot read 'nowhere/reference.json'",
        ),
    ],
)
def test_failures_print_their_reason_once_and_debug_shows_the_traceback(
    tmp_path, args, reason
) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home")}
    env.pop("PREFECT_API_URL", None)
    command = [sys.executable, "-m", "diffpath_flows.cli"]
    args = [*args, "--out", str(tmp_path / "o"), "--max-images", "4"]
    quiet = subprocess.run([*command, *args], env=env, capture_output=True, text=True)
    assert quiet.returncode == 1
    assert "Traceback" not in quiet.stderr and "Still processing" not in quiet.stderr
    assert quiet.stderr.strip().splitlines()[-1].startswith(reason)
    assert quiet.stderr.count(reason.removeprefix("error: ")) == 1, quiet.stderr
    loud = subprocess.run([*command, "--debug", *args], env=env, capture_output=True, text=True)
    assert loud.returncode == 1 and "Traceback" in loud.stderr


@pytest.mark.slow
@pytest.mark.parametrize("n_runs", [2, 4])
def test_simultaneous_first_runs_on_a_fresh_prefect_home_all_start(tmp_path, n_runs) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "fresh-home")}
    env.pop("PREFECT_API_URL", None)
    command = [sys.executable, "-m", "diffpath_flows.cli", "fit-reference"]
    runs = [
        subprocess.Popen(
            [*command, str(tmp_path / f"none{i}"), "--out", str(tmp_path / f"o{i}")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(n_runs)
    ]
    for i, run in enumerate(runs):
        _, stderr = run.communicate(timeout=600)
        # each reached its flow: the missing source is its one-line failure, not the server
        assert run.returncode == 1, stderr
        last = stderr.strip().splitlines()[-1]
        assert last.startswith(f"error: source '{tmp_path}/none{i}' does not exist"), stderr


@pytest.mark.slow
@pytest.mark.hostile(
    ("fault: kill -9 of a CLI run", "its orphaned Prefect server is stopped by the next run")
)
def test_the_server_of_a_killed_run_is_stopped_by_the_next(tmp_path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    from diffpath_flows.server import SERVERS, _is_prefect_server

    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "home")}
    env.pop("PREFECT_API_URL", None)
    cli = [sys.executable, "-m", "diffpath_flows.cli", "fit-reference"]
    long_run = subprocess.Popen(
        [*cli, str(SAMPLES / "reference.parquet"), "--out", str(tmp_path / "o")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    records = tmp_path / "home" / SERVERS
    deadline = time.time() + 300
    while not list(records.glob("*.json")):
        assert time.time() < deadline and long_run.poll() is None, "the run never started"
        time.sleep(0.5)
    server = json.loads(next(records.glob("*.json")).read_text())["server"]
    long_run.send_signal(signal.SIGKILL)
    long_run.wait()
    assert _is_prefect_server(server)  # orphaned
    (tmp_path / "empty").mkdir()  # passes the checks before Prefect, fails after it starts
    next_run = subprocess.run(
        [*cli, str(tmp_path / "empty"), "--out", str(tmp_path / "o2")], env=env, capture_output=True
    )
    assert next_run.returncode == 1
    deadline = time.time() + 30
    while _is_prefect_server(server):
        assert time.time() < deadline, "the orphaned server still runs"
        time.sleep(0.5)
    assert not list(records.glob("*.json"))  # the next run's own record went with it
