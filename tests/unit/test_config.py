import pytest

from diffpath.config import FeatureConfig, read_config_file
from diffpath.errors import ConfigError


def test_hash_is_stable() -> None:
    base = FeatureConfig()
    assert base.config_hash() == FeatureConfig().config_hash()
    assert len(base.config_hash()) == 16


def test_run_settings_are_not_feature_settings() -> None:
    """Where the weights are and how big a batch is belong to the run (RunOptions)."""
    for run_setting in ({"model": "default"}, {"batch_size": 7}, {"forward_batch": 3}):
        with pytest.raises(ConfigError, match=next(iter(run_setting))):
            FeatureConfig.parse(**run_setting)
    stored = {"method": "diffpathv2", "model": "/m", "batch_size": 7, "forward_batch": None}
    assert FeatureConfig.stored(stored) == (FeatureConfig(method="diffpathv2"), "/m")


def test_config_files_in_json_and_yaml(tmp_path) -> None:
    (tmp_path / "c.yaml").write_text("method: diffpath6d\ntimesteps: 5\n")
    (tmp_path / "c.json").write_text('{"method": "diffpath6d", "timesteps": 5}')
    from_yaml = FeatureConfig.parse(**read_config_file(tmp_path / "c.yaml"))
    from_json = FeatureConfig.parse(**read_config_file(tmp_path / "c.json"))
    assert from_yaml == from_json and from_yaml.timesteps == 5
    (tmp_path / "bad.yaml").write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        read_config_file(tmp_path / "bad.yaml")
    (tmp_path / "typo.yaml").write_text("timestep: 5\n")
    with pytest.raises(ConfigError, match="timestep"):
        FeatureConfig.parse(**read_config_file(tmp_path / "typo.yaml"))


@pytest.mark.parametrize(
    "change",
    [
        {"method": "diffpath6d"},
        {"method": "diffpathv2"},
        {"timesteps": 7},
        {"seed": 1},
        {"ssim_weighting": False},
        {"draws": 3},
    ],
)
def test_hash_changes_with_feature_fields(change: dict) -> None:
    assert FeatureConfig(**change).config_hash() != FeatureConfig().config_hash()


@pytest.mark.parametrize(
    "bad", [{"ssim_window": 4}, {"timesteps": 1}, {"method": "nope"}, {"t_start": 5, "t_end": 8}]
)
def test_invalid_values_raise_config_error(bad: dict) -> None:
    with pytest.raises(ConfigError):
        FeatureConfig.parse(**bad)


def test_config_is_frozen() -> None:
    config = FeatureConfig()
    with pytest.raises(ValueError):
        config.seed = 3  # type: ignore[misc]


def test_fields_added_later_keep_older_hashes_at_their_neutral_value() -> None:
    v2 = FeatureConfig(method="diffpathv2")
    assert '"draws"' not in v2.canonical_json()  # hashes from before `draws` are kept
    assert '"draws":2' in FeatureConfig(method="diffpathv2", draws=2).canonical_json()
    assert FeatureConfig(resize_via=None).config_hash() == FeatureConfig().config_hash()
    via = FeatureConfig(image_size=64, resize_via=32)
    assert via.config_hash() != FeatureConfig(image_size=64).config_hash()


def test_crops_are_names_fractions_or_boxes_and_hashed_only_when_set() -> None:
    from diffpath.config import CROPS, parse_crop
    from diffpath.errors import ConfigError

    assert parse_crop("celeba-face") == CROPS["celeba-face"]
    assert parse_crop("0.8") == 0.8 and parse_crop("0,0.1,1,0.9") == (0, 0.1, 1, 0.9)
    for bad in ("face", "1.5", "0.9,0.1,0.2,0.8", "0,0,1"):
        with pytest.raises(ConfigError, match="crop"):
            FeatureConfig.parse(crop=bad)
    with pytest.raises(ConfigError, match="not both"):
        FeatureConfig.parse(crop="0.8", center_crop=140)
    assert FeatureConfig(crop=None).config_hash() == FeatureConfig().config_hash()
    assert FeatureConfig(crop="celeba-face").config_hash() != FeatureConfig().config_hash()


def test_resize_via_must_be_below_the_image_size() -> None:
    from diffpath.errors import ConfigError

    with pytest.raises(ConfigError, match="resize_via"):
        FeatureConfig.parse(image_size=32, resize_via=32)


def test_each_method_has_its_defaults() -> None:
    assert (FeatureConfig().method, FeatureConfig().timesteps, FeatureConfig().draws) == (
        "diffpathv2+6d",
        5,
        2,
    )
    assert FeatureConfig().unet_evals == 15
    paper = FeatureConfig(method="diffpathv2")
    assert (paper.timesteps, paper.draws) == (10, 1)
    assert FeatureConfig.parse(timesteps=None, method="diffpath6d").timesteps == 10


def test_a_combination_is_its_methods_side_by_side() -> None:
    combined = FeatureConfig(method="diffpathv2+6d", timesteps=5, draws=4, ssim_window=7)
    v2, ddim = combined.parts()
    assert v2 == FeatureConfig(method="diffpathv2", timesteps=5, draws=4, ssim_window=7)
    # the DiffPath part is the config a plain diffpath6d run has, so they share a cache key
    assert ddim.config_hash() == FeatureConfig(method="diffpath6d", timesteps=5).config_hash()
    assert combined.unet_evals == 5 * 4 + 5
    assert FeatureConfig(method="diffpathv2").parts() == (FeatureConfig(method="diffpathv2"),)
