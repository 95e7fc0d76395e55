"""Shared fixtures: tiny diffusion models saved the way real ones are, and data paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def tiny_unet(out_channels: int = 3, size: int = 16) -> nn.Module:
    """A ~50k-parameter UNet2DModel, seeded, fast enough for CPU unit tests."""
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
    from diffpath.model import load_model

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
def tiny_config(tiny_model_dir: Path):
    """A fast feature config on the tiny model at the samples' 32 px."""
    from diffpath.config import FeatureConfig

    return FeatureConfig(method="diffpathv2", model=str(tiny_model_dir), timesteps=3, batch_size=32)
