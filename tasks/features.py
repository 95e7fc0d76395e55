"""One feature shard per task run: features by content, the shard's Parquet by locator."""

from __future__ import annotations

from prefect import get_run_logger, task
from tqdm.auto import tqdm

from diffpath.config import FeatureConfig
from diffpath.features.cache import compact_caches
from diffpath.features.shards import ShardCounts, featurize_shard
from diffpath.io.sources import Listing
from diffpath.model.diffusion import DiffusionModel
from diffpath.model.workers import cached_model
from tasks.retry import RETRY, transient_failure


def worker_model(config: FeatureConfig, device: str | None, compile: bool) -> DiffusionModel:
    """This process's model of `config`, on its Dask worker's GPU when it is one."""
    try:
        from distributed import get_worker

        worker = get_worker().name
    except (ImportError, ValueError):  # not running on a Dask worker
        worker = None
    return cached_model(config, device, compile, worker)


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
    model = worker_model(config, device, compile)
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


@task(**RETRY, retry_condition_fn=transient_failure)
def compact_cache_task(cache_root: str) -> None:
    """Fold the cache segments written since the last compaction into each key's index."""
    for done in compact_caches(cache_root):
        if done.generation is not None:
            get_run_logger().info(
                "cache %s: index generation %d, %d segments folded in, %d superseded deleted",
                done.uri,
                done.generation,
                done.folded,
                done.deleted,
            )
