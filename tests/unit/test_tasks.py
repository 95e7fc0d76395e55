"""Task bodies through `.fn()`: one call into the core each, no engine needed."""

from __future__ import annotations

import json

from prefect.logging import disable_run_logger

from tests.conftest import SAMPLES


def test_list_featurize_and_screen_tasks(tmp_path, tiny_config, tiny_model_dir) -> None:
    from diffpath.scoring.reference import fit_reference_shards
    from diffpath_tasks.features import featurize_shard_task
    from diffpath_tasks.reference import reference_setup_task
    from diffpath_tasks.scoring import screen_task
    from diffpath_tasks.sources import list_images

    out, cache = str(tmp_path / "run"), str(tmp_path / "cache")
    with disable_run_logger():
        listing = list_images.fn([str(SAMPLES / "incoming.parquet")], out, 16, 40, 0)
        assert (listing.n_images, listing.n_shards) == (40, 3)
        where = str(tiny_model_dir)
        shards = [
            featurize_shard_task.fn(listing, i, tiny_config, cache, out, where) for i in range(3)
        ]
        assert [s.n_images for s in shards] == [16, 16, 8]
        assert sum(s.n_computed for s in shards) == 40
        again = featurize_shard_task.fn(listing, 0, tiny_config, cache, out, where)
        assert (again.n_computed, again.n_cached) == (0, 16)
        uris = [s.uri for s in shards]
        reference = fit_reference_shards(uris, tiny_config, out, holdout=0.5, model=where)
        assert reference_setup_task.fn(reference, None) == (tiny_config, where)
        outputs = screen_task.fn([s.uri for s in shards], reference, out, 0.0, ["x"], {})
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert outputs["summary"].endswith("summary.json") and summary["n_scored"] == 40
