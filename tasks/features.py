"""One feature shard per task run: features by content, the shard's Parquet by locator."""

from __future__ import annotations

import threading

from prefect import get_run_logger, task
from tqdm.auto import tqdm

from diffpath.config import FeatureConfig
from diffpath.model import DiffusionModel, load_model
from diffpath.shards import ShardCounts, featurize_shard
from diffpath.sources import Listing
from tasks.retry import RETRY, transient_failure

_models: dict[tuple[str, str | None, str], DiffusionModel] = {}
_lock = threading.Lock()


def cached_model(config: FeatureConfig, device: str | None) -> DiffusionModel:
    """Load each (model, device, dtype) once per worker process."""
    key = (config.model, device, config.dtype)
    with _lock:
        if key not in _models:
            _models[key] = load_model(config.model, device=device, dtype=config.torch_dtype)
        return _models[key]


@task(**RETRY, retry_condition_fn=transient_failure)
def featurize_shard_task(
    listing: Listing,
    index: int,
    config: FeatureConfig,
    cache_root: str,
    out: str,
    device: str | None = None,
    progress: bool = False,
) -> ShardCounts:
    """Shard `index`: features of content not seen before are computed, the rest come from
    the content-addressed cache under `cache_root`."""
    model = cached_model(config, device)
    n = min(listing.shard_size, listing.n_images - index * listing.shard_size)
    with tqdm(total=n, desc=f"shard {index}", unit="img", disable=not progress) as bar:
        counts = featurize_shard(model, listing, index, config, cache_root, out, bar.update)
    get_run_logger().info(
        "shard %d: %d images, %d computed, %d from cache, %d unreadable -> %s",
        index,
        counts.n_images,
        counts.n_computed,
        counts.n_cached,
        counts.n_errors,
        counts.uri,
    )
    return counts
