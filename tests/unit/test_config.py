import pytest

from diffpath.config import FeatureConfig, read_config_file
from diffpath.errors import ConfigError


def test_hash_is_stable_and_ignores_execution_fields_and_model_location() -> None:
    base = FeatureConfig()
    assert base.config_hash() == FeatureConfig().config_hash()
    assert base.config_hash() == FeatureConfig(batch_size=7, forward_batch=3).config_hash()
    assert base.config_hash() == FeatureConfig(model="/elsewhere/same-weights").config_hash()
    assert len(base.config_hash()) == 16


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
    "change", [{"method": "diffpath6d"}, {"timesteps": 5}, {"seed": 1}, {"ssim_weighting": False}]
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
