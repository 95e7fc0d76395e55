"""Where a model is: a local folder is kept absolute, so cron jobs and workers find it."""

from __future__ import annotations

from diffpath.model.location import model_location


def test_a_local_model_folder_is_kept_absolute(tmp_path, monkeypatch) -> None:
    """fit-reference --model runs/model-tex, then screen from another directory (cron)."""
    from diffpath_flows.run import RunOptions

    (tmp_path / "runs" / "model-tex").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert model_location("runs/model-tex") == str(tmp_path / "runs" / "model-tex")
    assert RunOptions(model="runs/model-tex").model == str(tmp_path / "runs" / "model-tex")
    assert model_location("acme/tiny-ddpm") == "acme/tiny-ddpm"  # a hub id
    assert model_location("default") == "default" and RunOptions().model is None
