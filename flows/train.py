"""Train (or warm-start) the base diffusion model as a Prefect flow."""

from __future__ import annotations

from prefect import flow

from diffpath.model.train import TrainConfig
from diffpath_tasks.train import train_task


@flow(name="train-base-model")
def train_flow(
    config: TrainConfig,
    out: str,
    resume: bool = False,
    device: str | None = None,
    max_minutes: float | None = None,
    progress: bool = False,
) -> str:
    """Train the base model described by `config` into `out` (diffusers layout)."""
    return train_task(config, out, resume, device, max_minutes, progress)
