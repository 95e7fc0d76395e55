"""What makes two results the same: identity is defined here and nowhere else.

- An image is its bytes: `content_hash` (sha256, 64 hex). Names and locations are for
  people; they never key a result.
- A feature value is a function of (feature key, content hash), where the feature key is
  the config hash of the settings that change values plus the model weights' fingerprint
  (never the model's location).
- Each image's noise is seeded by (config seed, content hash), so identical bytes get
  identical features in any batch, order, run or source.
"""

from __future__ import annotations

import hashlib

from diffpath.config import FeatureConfig

__all__ = ["content_hash", "feature_key", "noise_seed"]


def content_hash(data: bytes) -> str:
    """sha256 of an image's encoded bytes, hex."""
    return hashlib.sha256(data).hexdigest()


def feature_key(config: FeatureConfig, model_id: str) -> str:
    """`<config hash>-<model fingerprint>`: everything besides the bytes a feature depends on."""
    return f"{config.config_hash()}-{model_id}"


def noise_seed(seed: int, image_id: str) -> int:
    """A 63-bit generator seed for one image's noise from the run seed and its id."""
    digest = hashlib.sha256(f"{seed}\x00{image_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)
