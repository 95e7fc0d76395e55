"""Content-addressed feature cache: features stored and found by (feature key, content hash).

Layout under a root URI (any fsspec store: a local folder, s3://bucket/prefix, …)::

    <root>/<feature-key>/key.json              config, model fingerprint, feature names
    <root>/<feature-key>/<h0h1>/<h2h3>/<h>     one object per image: D little-endian float32

The feature key is ``<config hash>-<model fingerprint>`` and ``h`` the sha256 of the image
bytes (both from `diffpath.identity`), so a rerun, a renamed file, a file under another
prefix or tonight's dump sharing most images with last night's finds every feature it has
seen; a rewritten file has a new hash and is computed afresh.

- Lookups read exactly the objects of the images asked for (concurrent GETs; a miss is
  a 404): nothing is listed, so a lookup costs the same in a cache of a thousand images
  or of a hundred million. 65,536 prefixes spread the requests over object-store partitions.
- Writes create one object per newly computed image, atomically (a rename on a local
  disk, a single PUT on object stores). An object's value is a function of its name, so
  two runs that compute the same image write the same value and neither can corrupt the
  other; nothing existing is ever rewritten in place.
- An object of the wrong size (e.g. left by a crashed writer on a disk without atomic
  rename) is treated as absent and recomputed.
- Cost on S3: one PUT per new image and one GET per image looked up; 10M new images
  ≈ 10M PUTs. Decode failures are not cached (decoding fails fast).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from importlib.metadata import version

import numpy as np

from diffpath.config import FeatureConfig
from diffpath.features import feature_names
from diffpath.identity import feature_key
from diffpath.storage import exists, join, read_many, write_json, write_many

__all__ = ["FeatureCache"]

log = logging.getLogger(__name__)

DTYPE = np.dtype("<f4")


class FeatureCache:
    """Features of one (config, model) under `root`, looked up by image content hash."""

    def __init__(self, root: str, config: FeatureConfig, model_id: str) -> None:
        self.config = config
        self.model_id = model_id
        self.key = feature_key(config, model_id)
        self.uri = join(root, self.key)
        self.dim = len(feature_names(config.method))

    def object_uri(self, sha256: str) -> str:
        return join(self.uri, sha256[:2], sha256[2:4], sha256)

    def get(self, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        """{hash: features (D,)} of the hashes already in the cache."""
        wanted = {self.object_uri(h): h for h in dict.fromkeys(hashes)}
        found = {}
        for uri, data in read_many(list(wanted)).items():
            if len(data) != self.dim * DTYPE.itemsize:
                log.warning("ignoring damaged cache object %s (%d bytes)", uri, len(data))
                continue
            found[wanted[uri]] = np.frombuffer(data, DTYPE).copy()
        return found

    def put(self, features: Mapping[str, np.ndarray]) -> None:
        """Store {hash: features (D,)}; describes the feature key in key.json once."""
        if not features:
            return
        manifest = join(self.uri, "key.json")
        if not exists(manifest):
            write_json(
                {
                    "feature_key": self.key,
                    "config": self.config.model_dump(mode="json"),
                    "model_id": self.model_id,
                    "features": list(feature_names(self.config.method)),
                    "dtype": DTYPE.str,
                    "diffpath": version("diffpath"),
                },
                manifest,
            )
        write_many(
            {self.object_uri(h): np.asarray(v, DTYPE).tobytes() for h, v in features.items()}
        )
