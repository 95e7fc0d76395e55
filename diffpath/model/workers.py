"""One model per worker process: each (weights, device, dtype, compile) is loaded once, and
worker i of a machine with several GPUs runs on GPU i. Flows, tasks and benchmarks load
their models here."""

from __future__ import annotations

import dataclasses
import threading

from diffpath.model.diffusion import DiffusionModel, gpu_count, load_model

__all__ = ["cached_model", "worker_device"]

_models: dict[tuple[str, str | None, str, bool], DiffusionModel] = {}
_lock = threading.Lock()


def worker_device(device: str | None, worker: object, gpus: int) -> str | None:
    """The device of this worker: worker i of a Dask LocalCluster (named 0, 1, …) on a
    machine with several GPUs takes cuda:(i mod #GPUs) unless a device index was given;
    workers that see one GPU (dask-cuda, CUDA_VISIBLE_DEVICES) keep the default."""
    if device not in (None, "cuda") or gpus < 2 or not isinstance(worker, int):
        return device
    return f"cuda:{worker % gpus}"


def cached_model(
    model: str,
    dtype: str,
    device: str | None,
    compile: bool = False,
    worker: object = None,
    batch_size: int | None = None,
    forward_batch: int | None = None,
) -> DiffusionModel:
    """The model at `model` in `dtype` on this worker's device (`worker`: its name, e.g. a
    Dask worker's), loaded once per process, driven in the run's batch sizes."""
    import torch

    device = worker_device(device, worker, gpu_count())
    key = (model, device, dtype, compile)
    with _lock:
        if key not in _models:
            _models[key] = load_model(
                model, device=device, dtype=getattr(torch, dtype), compile=compile
            )
        loaded = _models[key]
    return dataclasses.replace(loaded, batch_size=batch_size, forward_batch=forward_batch)
