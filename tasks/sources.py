"""List a source once and store the listing; shard tasks read their slice from it."""

from __future__ import annotations

from prefect import get_run_logger, task

from diffpath.io.sources import Listing, store_listing
from diffpath_tasks.retry import RETRY, transient_failure


@task(**RETRY, retry_condition_fn=transient_failure)
def list_images(
    source: list[str],
    out: str,
    shard_size: int,
    max_images: int | None,
    seed: int,
    allow_empty: bool = False,
) -> Listing:
    """List `source` (files or Parquet), optionally subsample, and store it under `out`."""
    listing = store_listing(source, out, shard_size, max_images, seed, allow_empty)
    get_run_logger().info(
        "listed %d images of %s in %d shards", listing.n_images, source, listing.n_shards
    )
    return listing
