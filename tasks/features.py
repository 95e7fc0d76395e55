"""One feature shard per task run: read its images, featurise, write Parquet, return its URI."""

from __future__ import annotations

import threading

from prefect import get_run_logger, task
from tqdm.auto import tqdm

from diffpath.config import FeatureConfig
from diffpath.featurestore import compute_shard, shard_metadata, shard_uri, write_shard
from diffpath.model import DiffusionModel, load_model
from diffpath.sources import read_listing
from diffpath.storage import exists
from tasks.retry import is_transient
from tasks.sources import Listing

_models: dict[tuple[str, str | None, str], DiffusionModel] = {}
_lock = threading.Lock()


def cached_model(config: FeatureConfig, device: str | None) -> DiffusionModel:
    """Load each (model, device, dtype) once per worker process."""
    key = (config.model, device, config.dtype)
    with _lock:
        if key not in _models:
            _models[key] = load_model(config.model, device=device, dtype=config.torch_dtype)
        return _models[key]


@task(retries=1, retry_delay_seconds=5, retry_condition_fn=is_transient)
def featurize_shard(
    listing: Listing,
    index: int,
    config: FeatureConfig,
    features_root: str,
    device: str | None = None,
    progress: bool = False,
) -> str:
    """Features of shard `index` of `listing`; skipped when a shard of the same config hash
    and model already exists (outputs are committed atomically, so it is complete)."""
    log = get_run_logger()
    uri = shard_uri(features_root, config, listing.source_id, index)
    model = cached_model(config, device)
    if exists(uri) and shard_metadata(uri)["model_id"] == model.model_id:
        log.info("shard %d exists for config %s, skipped", index, config.config_hash())
        return uri
    refs = read_listing(listing.uri)[index * listing.shard_size : (index + 1) * listing.shard_size]
    with tqdm(total=len(refs), desc=f"shard {index}", unit="img", disable=not progress) as bar:
        frame = compute_shard(model, refs, config, bar.update)
    failed = frame["error"].is_not_null().sum()
    write_shard(uri, frame, config, model.model_id)
    log.info("shard %d: %d images, %d unreadable -> %s", index, len(frame), failed, uri)
    return uri
