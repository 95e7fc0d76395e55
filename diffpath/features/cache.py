"""Content-addressed feature cache: features stored and found by (feature key, content hash).

Layout under a root URI (any fsspec store: a local folder, s3://bucket/prefix, …)::

    <root>/<feature-key>/key.json              config, model fingerprint, feature names
    <root>/<feature-key>/<h0h1>/<h2h3>/<h>     one object per image: D little-endian float32
                                               and a 16-byte checksum

The feature key is ``<config hash>-<model fingerprint>`` and ``h`` the sha256 of the image
bytes (both from `diffpath.io.identity`), so a rerun, a renamed file, a file under another
prefix or tonight's dump sharing most images with last night's finds every feature it has
seen; a rewritten file has a new hash and is computed afresh.

- Lookups read exactly the objects of the images asked for (concurrent GETs; a miss is
  a 404): nothing is listed, so a lookup costs the same in a cache of a thousand images
  or of a hundred million. 65,536 prefixes spread the requests over object-store partitions.
- Writes create one object per newly computed image, atomically (a rename on a local
  disk, a single PUT on object stores). An object's value is a function of its name, so
  two runs that compute the same image write the same value and neither can corrupt the
  other; nothing existing is ever rewritten in place.
- Every object is verified on read: its checksum binds the feature key, the image's
  content hash and the values, so a torn write, a flipped bit, another image's object
  copied in its place or a non-finite value is a warning naming the image, and the
  feature is recomputed and its object replaced. (A checksum detects accidents, not
  tampering: anyone who can write the cache can write a valid object.)
- Cost on S3: one PUT per new image and one GET per image looked up; 10M new images
  ≈ 10M PUTs. Decode failures are not cached (decoding fails fast).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from importlib.metadata import version

import numpy as np

from diffpath.config import FeatureConfig
from diffpath.features.extract import feature_names
from diffpath.io.identity import feature_key
from diffpath.io.storage import exists, join, read_many, write_json, write_many

__all__ = ["FeatureCache"]

log = logging.getLogger(__name__)

DTYPE = np.dtype("<f4")
CHECKSUM_BYTES = 16


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

    def _checksum(self, sha256: str, values: bytes) -> bytes:
        return hashlib.sha256(f"{self.key}/{sha256}/".encode() + values).digest()[:CHECKSUM_BYTES]

    def _verified(self, sha256: str, data: bytes) -> np.ndarray | None:
        """An object's features if its size, checksum and values hold; else None."""
        values, checksum = data[:-CHECKSUM_BYTES], data[-CHECKSUM_BYTES:]
        if len(values) != self.dim * DTYPE.itemsize or checksum != self._checksum(sha256, values):
            return None
        features = np.frombuffer(values, DTYPE).copy()
        return features if np.isfinite(features).all() else None

    def get(self, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        """{hash: features (D,)} of the hashes in the cache whose objects verify; a damaged
        object is logged with its image's hash and left out (so it is recomputed)."""
        wanted = {self.object_uri(h): h for h in dict.fromkeys(hashes)}
        found, damaged = {}, []
        for uri, data in read_many(list(wanted)).items():
            features = self._verified(wanted[uri], data)
            if features is None:
                damaged.append(wanted[uri])
            else:
                found[wanted[uri]] = features
        if damaged:
            log.warning(
                "%d cached features failed verification (damaged, replaced or non-finite) and "
                "are recomputed: images with content hash %s%s",
                len(damaged),
                ", ".join(damaged[:3]),
                " …" if len(damaged) > 3 else "",
            )
        return found

    def put(self, features: Mapping[str, np.ndarray]) -> None:
        """Store {hash: features (D,)} with their checksums (replacing damaged objects);
        describes the feature key in key.json once."""
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
        objects = {}
        for sha256, value in features.items():
            values = np.asarray(value, DTYPE)
            if np.isfinite(values).all():  # a non-finite feature is never cached
                data = values.tobytes()
                objects[self.object_uri(sha256)] = data + self._checksum(sha256, data)
        write_many(objects)
