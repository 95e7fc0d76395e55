"""Identity: a feature is keyed by config hash, model fingerprint and content hash."""

from __future__ import annotations

from diffpath.config import FeatureConfig
from diffpath.io.identity import feature_key


def test_feature_key_is_config_hash_plus_model() -> None:
    config = FeatureConfig(timesteps=5)
    assert feature_key(config, "abc") == f"{config.config_hash()}-abc"
