"""One model per worker process, on that worker's GPU."""

from __future__ import annotations

import pytest

from diffpath.model.workers import cached_model, worker_device


@pytest.mark.parametrize(
    "device, worker, gpus, expected",
    [
        (None, 0, 4, "cuda:0"),
        ("cuda", 5, 4, "cuda:1"),
        ("cuda:3", 1, 4, "cuda:3"),  # an explicit index is kept
        (None, 1, 1, None),  # one visible GPU (dask-cuda): the default
        (None, "tcp://10.0.0.1:4000", 4, None),  # not a LocalCluster worker
        ("cpu", 2, 4, "cpu"),
    ],
)
def test_each_local_worker_takes_its_own_gpu(device, worker, gpus, expected) -> None:
    assert worker_device(device, worker, gpus) == expected


def test_a_model_is_loaded_once_per_process_and_dtype(tiny_model_dir) -> None:
    where = str(tiny_model_dir)
    model = cached_model(where, "float32", "cpu")
    assert cached_model(where, "float32", "cpu", worker=3).unet is model.unet  # one device
    assert cached_model(where, "bfloat16", "cpu").unet is not model.unet
    batched = cached_model(where, "float32", "cpu", batch_size=5, forward_batch=7)
    assert batched.unet is model.unet and batched.batch_sizes == (5, 7)
    assert model.batch_sizes == (64, 32)  # the run's sizes never stick to the shared model
