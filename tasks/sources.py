"""List a source once and store the listing; shard tasks read their slice from it."""

from __future__ import annotations

from dataclasses import dataclass

from prefect import get_run_logger, task

from diffpath.featurestore import source_id
from diffpath.sources import list_source, subsample, write_listing
from diffpath.storage import join
from tasks.retry import is_transient


@dataclass(frozen=True)
class Listing:
    """Where a stored listing is and how it splits into shards."""

    uri: str
    source_id: str
    n_images: int
    shard_size: int

    @property
    def n_shards(self) -> int:
        return -(-self.n_images // self.shard_size)


@task(retries=2, retry_delay_seconds=2, retry_condition_fn=is_transient)
def list_images(
    source: list[str],
    out: str,
    shard_size: int = 2048,
    max_images: int | None = None,
    seed: int = 0,
) -> Listing:
    """List `source` (files or Parquet), optionally subsample, and store it under `out`."""
    refs = subsample(list_source(source), max_images, seed)
    sid = source_id(refs)
    uri = write_listing(refs, join(out, "listings", f"{sid}.parquet"))
    get_run_logger().info("listed %d images of %s as source %s", len(refs), source, sid)
    return Listing(uri=uri, source_id=sid, n_images=len(refs), shard_size=shard_size)
