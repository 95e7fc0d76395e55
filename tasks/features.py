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
from diffpath_tasks.retry import RETRY, transient_failure

Batches = tuple[int | None, int | None]


def worker_model(
    model: str, dtype: str, device: str | None, compile: bool, batches: Batches = (None, None)
) -> DiffusionModel:
    """This process's model at `model`, on its Dask worker's GPU when it is one, driven in
    `batches` (images per batch, UNet rows per call; None: the device's default)."""
    try:
        from distributed import get_worker

        worker = get_worker().name
    except (ImportError, ValueError):  # not running on a Dask worker
        worker = None
    return cached_model(model, dtype, device, compile, worker, *batches)


@task(**RETRY, retry_condition_fn=transient_failure)
def featurize_shard_task(
    listing: Listing,
    index: int,
    config: FeatureConfig,
    cache_root: str,
    out: str,
    model: str = "default",
    device: str | None = None,
    compile: bool = False,
    batches: Batches = (None, None),
    progress: bool = False,
    prefetch: bool = False,
) -> ShardCounts:
    """Shard `index` on the weights at `model`: features of content not seen before are
    computed, the rest come from the content-addressed cache under `cache_root`; with
    `prefetch`, the next shard's bytes are read meanwhile (shards run in order here)."""
    unet = worker_model(model, config.dtype, device, compile, batches)
    n = min(listing.shard_size, listing.n_images - index * listing.shard_size)
    with tqdm(total=n, desc=f"shard {index}", unit="img", disable=not progress) as bar:
        counts = featurize_shard(
            unet, listing, index, config, cache_root, out, bar.update, prefetch
        )
    get_run_logger().info(
        "shard %d on %s: %d images, %d computed, %d from cache, %d unreadable -> %s",
        index,
        unet.device,
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
