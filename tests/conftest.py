"""Shared fixtures: tiny diffusion models saved the way real ones are, and data paths."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def tiny_unet(out_channels: int = 3, size: int | None = None) -> nn.Module:
    """A ~50k-parameter UNet2DModel, seeded, fast enough for CPU unit tests; without a
    `size` it declares no training resolution, so it runs at any image size."""
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=size,
        in_channels=3,
        out_channels=out_channels,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    ).eval()


def save_tiny_model(folder: Path, layout: str = "pipeline", out_channels: int = 3) -> Path:
    """Save a tiny UNet + DDPM schedule in diffusers `pipeline` or `flat` layout."""
    from diffusers import DDPMScheduler

    unet_dir = folder / "unet" if layout == "pipeline" else folder
    scheduler_dir = folder / "scheduler" if layout == "pipeline" else folder
    tiny_unet(out_channels).save_pretrained(unet_dir, safe_serialization=True)
    DDPMScheduler(num_train_timesteps=1000).save_pretrained(scheduler_dir)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir: Path):
    from diffpath.model.diffusion import load_model

    return load_model(str(tiny_model_dir), device="cpu")


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"shared image data not found at {SHARED_DATA}")
    return SHARED_DATA


SAMPLES = Path(__file__).resolve().parents[1] / "diffpath" / "assets" / "samples"
N_INCOMING = 120  # images in SAMPLES / "incoming.parquet"


@pytest.fixture(scope="session")
def prefect_harness():
    """One Prefect test server for the whole session, flow heartbeats off."""
    from prefect.settings import temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with temporary_settings(updates={"flows.heartbeat_frequency": None}), prefect_test_harness():
        yield


@pytest.fixture(scope="session")
def tiny_config():
    """A fast feature config at the samples' 32 px (run it on the tiny model: `tiny_run`)."""
    from diffpath.config import FeatureConfig

    return FeatureConfig(method="diffpathv2", timesteps=3)


@pytest.fixture(scope="session")
def tiny_run(tiny_model_dir: Path):
    """`RunOptions` on the tiny model, batches of 32, with the options given."""
    from diffpath_flows.run import RunOptions

    return lambda **options: RunOptions(model=str(tiny_model_dir), batch_size=32, **options)


# The hostile-input corpus: tests marked `hostile((input, outcome), ...)` are the rows of
# docs/reliability.md, written by `python -m pytest tests -m hostile --reliability-report PATH`.
HOSTILE: list[tuple[str, str, str, str]] = []  # (input, expected outcome, test, result)


@pytest.fixture(scope="session")
def s3_endpoint():
    """A moto S3 server; credentials and endpoint go through the standard AWS environment."""
    from moto.server import ThreadedMotoServer
    from s3fs import S3FileSystem

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    patch = pytest.MonkeyPatch()
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }.items():
        patch.setenv(name, value)
    S3FileSystem.clear_instance_cache()
    fs = S3FileSystem()
    fs.mkdir("diffpath-test")
    fs.put(str(SAMPLES / "incoming.parquet"), "diffpath-test/data/incoming.parquet")
    fs.put(str(SAMPLES / "reference.parquet"), "diffpath-test/data/reference.parquet")
    yield endpoint
    S3FileSystem.clear_instance_cache()
    patch.undo()
    server.stop()


def utc_day(offset_days: int = 0) -> str:
    """Today's UTC date (plus `offset_days`) as `{date}` writes it."""
    from datetime import datetime, timedelta, timezone

    return (datetime.now(timezone.utc) + timedelta(days=offset_days)).strftime("%Y-%m-%d")


@pytest.fixture(scope="session")
def tiny_reference(tmp_path_factory, tiny_config, tiny_run, prefect_harness) -> str:
    """A reference fitted by the flow on 40 bundled faces (half held back to calibrate)."""
    from diffpath_flows.pipeline import fit_reference_flow

    return fit_reference_flow(
        [str(SAMPLES / "reference.parquet")],
        str(tmp_path_factory.mktemp("tiny-reference")),
        tiny_config,
        holdout=0.5,
        run=tiny_run(max_images=40),
    )


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--reliability-report",
        metavar="PATH",
        help="write the table of hostile inputs and faults tried, and their results, to PATH",
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    marker = item.get_closest_marker("hostile")
    if marker is not None and (report.when == "call" or report.outcome != "passed"):
        for case, outcome in marker.args:
            HOSTILE.append((case, outcome, item.nodeid.split("::")[-1], report.outcome))
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = session.config.getoption("--reliability-report")
    if path and HOSTILE:
        Path(path).write_text(reliability_markdown(HOSTILE))


def reliability_markdown(rows: list[tuple[str, str, str, str]]) -> str:
    """docs/reliability.md: every hostile case, what must happen, the test, its result."""
    passed = sum(result == "passed" for *_, result in rows)
    faults = sum(case.startswith("fault:") for case, *_ in rows)
    lines = [
        "# Reliability: hostile inputs and faults",
        "",
        "Generated by `python -m pytest tests -m hostile --reliability-report",
        "docs/reliability.md` (the tests marked `hostile`, which also run in CI with the rest;",
        "do not edit by hand). Each row is one input or injected fault, what must",
        "happen, and the test that checks it. The tests that screen also assert that every",
        "listed image is a score row (scored from its own bytes) or an error row naming it:",
        "a run of passing rows lost no image and gave no silent wrong answer.",
        "",
        f"**{len(rows)} cases ({len(rows) - faults} inputs, {faults} faults injected): "
        f"{passed} passed, {len(rows) - passed} not.** Rows lost: "
        + ("0; silent wrong answers: 0." if passed == len(rows) else "see the failing rows."),
        "",
        "| input or fault | what must happen | test | result |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {case.replace('|', '&#124;')} | {outcome} | `{test}` | {result} |"
        for case, outcome, test, result in rows
    ]
    return "\n".join(lines) + "\n"
