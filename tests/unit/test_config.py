import pytest

from diffpath.config import FeatureConfig
from diffpath.errors import ConfigError


def test_hash_is_stable_and_ignores_execution_fields() -> None:
    base = FeatureConfig()
    assert base.config_hash() == FeatureConfig().config_hash()
    assert base.config_hash() == FeatureConfig(batch_size=7, forward_batch=3).config_hash()
    assert len(base.config_hash()) == 16


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
