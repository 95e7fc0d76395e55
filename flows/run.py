"""How a run is executed, one definition for the CLI, the flows and deployments."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class RunOptions(BaseModel):
    """How a run is executed; none of it changes a feature value."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    features_root: str | None = Field(
        None, description="feature cache URI, shareable across runs (default OUT/features)"
    )
    shard_size: int = Field(2048, ge=1, description="images per shard task")
    max_images: int | None = Field(None, ge=1, description="deterministic subsample of N images")
    batch_size: int | None = Field(None, ge=1, description="images per model batch")
    device: str | None = Field(None, description="cpu, cuda, cuda:1 (default: CUDA if present)")
    compile: bool = Field(False, description="torch.compile the UNet: 2-3x on GPUs for long runs")
    runner: Literal["threads", "dask"] = Field(
        "threads", description="threads (this process) | dask (a LocalCluster, one worker per GPU)"
    )
    dask_address: str | None = Field(
        None, description="run on an existing Dask cluster (tcp://host:8786)"
    )
    progress: bool = Field(False, description="progress bars (CLI); off in workers")
