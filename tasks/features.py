"""One feature shard per task run: features by content, the shard's Parquet by locator."""

from __future__ import annotations

import threading

from prefect import get_run_logger, task
from tqdm.auto import tqdm

from diffpath.config import FeatureConfig
from diffpath.features.shards import ShardCounts, featurize_shard
from diffpath.io.sources import Listing
from diffpath.model.diffusion import DiffusionModel, gpu_count, load_model
from tasks.retry import RETRY, transient_failure

_models: dict[tuple[str, str | None, str, bool], DiffusionModel] = {}
_lock = threading.Lock()


def worker_device(device: str | None, worker: object, gpus: int) -> str | None:
    """The device of this worker: worker i of a Dask LocalCluster (named 0, 1, …) on a
    machine with several GPUs takes cuda:(i mod #GPUs) unless a device index was given;
    workers that see one GPU (dask-cuda, CUDA_VISIBLE_DEVICES) keep the default."""
    if device not in (None, "cuda") or gpus < 2 or not isinstance(worker, int):
        return device
    return f"cuda:{worker % gpus}"


def _dask_worker_name() -> object:
    try:
        from distributed import get_worker

        return get_worker().name
    except (ImportError, ValueError):  # not running on a Dask worker
        return None


def cached_model(config: FeatureConfig, device: str | None, compile: bool) -> DiffusionModel:
    """Load each (model, device, dtype, compile) once per worker process, on its own GPU."""
    device = worker_device(device, _dask_worker_name(), gpu_count())
    key = (config.model, device, config.dtype, compile)
    with _lock:
        if key not in _models:
            _models[key] = load_model(
                config.model, device=device, dtype=config.torch_dtype, compile=compile
            )
        return _models[key]


@task(**RETRY, retry_condition_fn=transient_failure)
def featurize_shard_task(
    listing: Listing,
    index: int,
    config: FeatureConfig,
    cache_root: str,
    out: str,
    device: str | None = None,
    compile: bool = False,
    progress: bool = False,
) -> ShardCounts:
    """Shard `index`: features of content not seen before are computed, the rest come from
    the content-addressed cache under `cache_root`."""
    model = cached_model(config, device, compile)
    n = min(listing.shard_size, listing.n_images - index * listing.shard_size)
    with tqdm(total=n, desc=f"shard {index}", unit="img", disable=not progress) as bar:
        counts = featurize_shard(model, listing, index, config, cache_root, out, bar.update)
    get_run_logger().info(
        "shard %d on %s: %d images, %d computed, %d from cache, %d unreadable -> %s",
        index,
        model.device,
        counts.n_images,
        counts.n_computed,
        counts.n_cached,
        counts.n_errors,
        counts.uri,
    )
    return counts
