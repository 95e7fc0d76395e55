"""A nightly dump of mixed resolutions is screened on one geometry: the same faces stored at
178, 356 and 712 px give the same features with a crop in fractions (`--crop celeba-face`),
where a crop in pixels (references before 0.3) screens another region at each size."""

from __future__ import annotations

import io

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from diffpath import FeatureConfig, decode_image, extract_features, load_model
from diffpath.scoring.reference import fit_reference

pytestmark = pytest.mark.slow


def stored_at(blob: bytes, scale: int) -> bytes:
    image = Image.open(io.BytesIO(blob)).convert("RGB")
    image = image.resize((178 * scale, 218 * scale), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def features_by_size(config: FeatureConfig, blobs: list[bytes]) -> dict[int, np.ndarray]:
    model = load_model("default", device="cpu")
    ids = [f"face-{i}" for i in range(len(blobs))]  # one noise per face: geometry alone
    found = {}
    for scale in (1, 2, 4):
        images = [
            decode_image(stored_at(b, scale), ids[i], **config.geometry)
            for i, b in enumerate(blobs)
        ]
        found[scale] = extract_features(model, torch.stack(images), ids, config)
    return found


@pytest.mark.hostile(
    ("the same faces stored at 178, 356 and 712 px", "one model input, the same features"),
)
def test_the_same_faces_at_three_resolutions_get_the_same_features(shared_data) -> None:
    rows = pq.read_table(shared_data / "celeba" / "test.parquet", columns=["image"]).slice(0, 6)
    blobs = rows["image"].to_pylist()
    for config, same in (
        (FeatureConfig(crop="celeba-face"), True),
        (FeatureConfig(center_crop=140), False),
    ):
        found = features_by_size(config, blobs)
        native = found[1]
        between_faces = (
            np.abs(native[:, None] - native[None]).mean(-1)[~np.eye(6, dtype=bool)].mean()
        )
        for scale in (2, 4):
            moved = np.abs(found[scale] - native).mean()
            assert (moved < 0.1 * between_faces) if same else (moved > 0.5 * between_faces)


def test_an_old_pixel_crop_reference_is_screened_with_a_warning() -> None:
    features = np.random.default_rng(0).normal(size=(100, 12))
    old = fit_reference(features, FeatureConfig(center_crop=140), "m")
    new = fit_reference(features, FeatureConfig(crop="celeba-face"), "m")
    assert any("--crop" in w for w in old.warnings)
    assert not any("--crop" in w for w in new.warnings)
