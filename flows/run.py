"""How a run is executed, one definition for the CLI, the flows and deployments."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from diffpath.model.location import model_location


class RunOptions(BaseModel):
    """How a run is executed; none of it changes a feature value."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str | None = Field(
        None,
        description="model weights: 'default' (the bundled model), a folder or a hub id "
        "(fit-reference, audit: default 'default'; benchmark: the spec's; screen, evaluate, "
        "audit --reference: the reference's, unless they moved)",
    )
    features_root: str | None = Field(
        None, description="feature cache URI, shareable across runs (default OUT/features)"
    )
    shard_size: int = Field(2048, ge=1, description="images per shard task")
    max_images: int | None = Field(None, ge=1, description="deterministic subsample of N images")
    batch_size: int | None = Field(
        None, ge=1, description="images per model batch (default: 64 on CPU, 512 on GPU)"
    )
    forward_batch: int | None = Field(
        None, ge=1, description="UNet inputs per call (default: 32 on CPU, 8192 on GPU)"
    )
    device: str | None = Field(None, description="cpu, cuda, cuda:1 (default: CUDA if present)")
    compile: bool = Field(False, description="torch.compile the UNet: 2-3x on GPUs for long runs")
    runner: Literal["threads", "dask"] = Field(
        "threads", description="threads (this process) | dask (a LocalCluster, one worker per GPU)"
    )
    dask_address: str | None = Field(
        None, description="run on an existing Dask cluster (tcp://host:8786)"
    )
    progress: bool = Field(False, description="progress bars (CLI); off in workers")

    @field_validator("model")
    @classmethod
    def _located(cls, model: str | None) -> str | None:
        """A local folder as its absolute path: workers and later runs find it from anywhere."""
        return None if model is None else model_location(model)

    @property
    def batches(self) -> tuple[int | None, int | None]:
        """(images per batch, UNet inputs per call); None: the device's default."""
        return self.batch_size, self.forward_batch
