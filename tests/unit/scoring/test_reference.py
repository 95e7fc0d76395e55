"""References: followed by their weights' fingerprint, refused with the reason when edited."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from safetensors.torch import load_file, save_file

from diffpath.config import FeatureConfig
from diffpath.errors import ConfigError, ConfigMismatchError
from diffpath.model.diffusion import model_fingerprint
from diffpath.scoring.reference import (
    _checksum,
    fit_reference,
    load_reference,
    reference_setup,
    reference_to_dict,
    save_reference,
    split_holdout,
)


def test_reference_follows_its_weights_not_their_location(tmp_path, tiny_model_dir) -> None:
    config, where = FeatureConfig(timesteps=3), str(tiny_model_dir)
    features = np.random.default_rng(0).normal(size=(100, 6))
    fitted = fit_reference(features, config, model_fingerprint(where), model=where)
    uri = save_reference(fitted, str(tmp_path / "reference.json"))
    loaded = load_reference(uri)
    np.testing.assert_array_equal(loaded.anomaly_score(features), fitted.anomaly_score(features))
    assert loaded.feature_key == fitted.feature_key
    assert reference_setup(uri) == (config, where)
    moved = shutil.copytree(tiny_model_dir, tmp_path / "moved")
    assert reference_setup(uri, str(moved)) == (config, str(moved))
    weights = moved / "unet" / "diffusion_pytorch_model.safetensors"
    save_file({k: v * 1.001 for k, v in load_file(weights).items()}, weights)
    with pytest.raises(ConfigMismatchError, match="fitted with model"):
        reference_setup(uri, str(moved))


def test_a_reference_saved_before_run_settings_left_the_config_still_loads(
    tmp_path, tiny_model_dir
) -> None:
    """0.3 kept the model folder and batch sizes in the config: same hash, same weights."""
    config, where = FeatureConfig(timesteps=3), str(tiny_model_dir)
    fitted = fit_reference(np.random.default_rng(0).normal(size=(100, 6)), config, "x")
    data = reference_to_dict(fitted)
    del data["model"]
    data["config"] |= {"model": where, "batch_size": 32, "forward_batch": None}
    data["model_id"] = model_fingerprint(where)
    data["feature_key"] = f"{config.config_hash()}-{data['model_id']}"
    data["checksum"] = _checksum(data)
    (tmp_path / "old.json").write_text(json.dumps(data))
    assert reference_setup(str(tmp_path / "old.json")) == (config, where)


def test_a_reference_of_the_previous_default_says_so_in_one_line(tmp_path) -> None:
    from diffpath.model.diffusion import PREVIOUS_DEFAULTS

    v1 = next(iter(PREVIOUS_DEFAULTS))
    features = np.random.default_rng(0).normal(size=(100, 6))
    fitted = fit_reference(features, FeatureConfig(method="diffpathv2"), v1)
    uri = save_reference(fitted, str(tmp_path / "reference.json"))
    with pytest.raises(ConfigMismatchError) as raised:
        reference_setup(uri)  # the bundled default is another model now
    message = str(raised.value)
    assert "\n" not in message and "base model v1" in message and "refit the reference" in message


@pytest.fixture
def saved_reference(tmp_path) -> tuple[str, dict]:
    from diffpath.scoring.reference import fit_reference

    features = np.random.default_rng(0).normal(size=(200, 6))
    reference = fit_reference(features, FeatureConfig(method="diffpathv2"), "m1", density="gmm")
    uri = save_reference(reference, str(tmp_path / "reference.json"))
    return uri, json.loads(Path(uri).read_text())


def rewrite(uri: str, data: dict, checksum: bool) -> None:
    """Edit a reference; with `checksum`, also recompute its checksum (a careful forger)."""
    from diffpath.scoring.reference import _checksum

    if checksum:
        data["checksum"] = _checksum(data)
    Path(uri).write_text(json.dumps(data))


@pytest.mark.parametrize(
    "edit, checksum, message",
    [
        (lambda d: d.update(threshold=1e9), False, "checksum mismatch"),
        (lambda d: d.update(threshold=float("nan")), True, "threshold nan is not finite"),
        (lambda d: d["config"].update(timesteps=5), True, "does not match its config hash"),
        (lambda d: d.update(target_fpr=1.5), True, "target FPR 1.5"),
        (lambda d: d.update(calibration_scores=[]), True, "calibration scores"),
        (lambda d: d.pop("threshold"), True, "not a valid reference"),
    ],
)
def test_edited_references_are_refused_with_the_reason(saved_reference, edit, checksum, message):
    from diffpath.errors import ConfigError

    uri, data = saved_reference
    edit(data)
    rewrite(uri, data, checksum)
    with pytest.raises(ConfigError, match=message):
        load_reference(uri)


def test_impossible_densities_are_refused(saved_reference) -> None:
    from diffpath.errors import ConfigError

    uri, data = saved_reference
    weights = data["density"]["state"]["weights_"]
    weights["data"] = [0.0] * len(weights["data"])
    rewrite(uri, data, checksum=True)
    with pytest.raises(ConfigError, match=r"weights .* do not sum to 1"):
        load_reference(uri)


def test_broken_json_is_one_clear_error(tmp_path) -> None:
    from diffpath.errors import ConfigError

    (tmp_path / "reference.json").write_text('{"format": "diffpath-reference/2", "thr')
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_reference(str(tmp_path / "reference.json"))


def test_a_run_reads_its_reference_once(tmp_path) -> None:
    """The run keeps the copy it read; the reference replaced at its URI mid-run is not
    mixed in, and the copy's checksum is what the summary records."""
    from diffpath.scoring.reference import pin_reference

    features = np.random.default_rng(0).normal(size=(100, 6))
    first = fit_reference(features, FeatureConfig(method="diffpathv2"), "m1")
    uri = save_reference(first, str(tmp_path / "ref" / "reference.json"))
    pinned = pin_reference(uri, str(tmp_path / "run"))
    save_reference(fit_reference(features + 5, FeatureConfig(method="diffpathv2"), "m1"), uri)
    kept = load_reference(pinned)
    np.testing.assert_array_equal(
        kept.calibration_scores, load_reference(pinned).calibration_scores
    )
    assert kept.threshold == first.threshold != load_reference(uri).threshold
    assert kept.checksum == json.loads(Path(pinned).read_text())["checksum"]
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ConfigError, match="not a diffpath reference"):
        pin_reference(str(tmp_path / "bad.json"), str(tmp_path / "run2"))
    assert not (tmp_path / "run2").exists()


def test_copies_of_one_image_stay_on_one_side_of_the_split(tmp_path) -> None:
    """A random split by row put copies on both sides: the copies held back score like
    the fitted ones, and the calibration scores come out low. The split is by content."""
    from diffpath.features.extract import feature_names
    from diffpath.features.shards import shard_uri, write_shard
    from diffpath.scoring.reference import fit_reference_shards

    config = FeatureConfig(method="diffpathv2")
    rng = np.random.default_rng(0)
    unique = rng.normal(size=(60, 6))
    values = np.vstack([unique, unique[:30], unique[:30]])  # 30 images three times
    hashes = [f"h{i}" for i in range(60)] + [f"h{i}" for i in range(30)] * 2
    frame = {name: values[:, j] for j, name in enumerate(feature_names(config.method))}
    frame |= {"uri": [f"{i}.png" for i in range(120)], "row": [None] * 120}
    frame |= {"path": [f"{i}.png" for i in range(120)], "sha256": hashes, "error": [None] * 120}
    uri = write_shard(shard_uri(str(tmp_path), "aaaa", 0, config), pa.table(frame), config, "m")
    reference = load_reference(fit_reference_shards([uri], config, str(tmp_path), holdout=0.3))
    calibrated = set(np.round(reference.calibration_scores, 9))
    scores = np.round(reference.anomaly_score(values), 9)  # copies score alike
    held = [h for h, score in zip(hashes, scores, strict=True) if score in calibrated]
    assert len(held) == len(reference.calibration_scores)  # no copy of one was fitted
    assert any(hashes.count(h) == 3 for h in held) and reference.n_fit == 120 - len(held)


def test_a_grouped_reference_keeps_each_calibration_scores_group(tmp_path) -> None:
    rng = np.random.default_rng(0)
    groups = np.repeat([f"id{i}" for i in range(20)], 10)
    features = rng.normal(size=(200, 6)) + np.repeat(rng.normal(size=(20, 6)), 10, axis=0)
    fitted = fit_reference(features, FeatureConfig(method="diffpathv2"), "m", groups=groups)
    assert fitted.split == "group" and len(np.unique(fitted.calibration_groups)) == 4
    _, cal_rows = split_holdout(200, 0.2, 0, groups)
    scores = fitted.anomaly_score(features[cal_rows])
    for code in np.unique(fitted.calibration_groups):  # each code is one identity's scores
        mine = np.sort(fitted.calibration_scores[fitted.calibration_groups == code])
        held = set(groups[cal_rows])
        assert any(np.allclose(mine, np.sort(scores[groups[cal_rows] == g])) for g in held)
    loaded = load_reference(save_reference(fitted, str(tmp_path / "reference.json")))
    np.testing.assert_array_equal(loaded.calibration_groups, fitted.calibration_groups)
    plain = fit_reference(features, FeatureConfig(method="diffpathv2"), "m")
    saved = json.loads(Path(save_reference(plain, str(tmp_path / "p.json"))).read_text())
    assert "calibration_groups" not in saved  # references without groups are as before
