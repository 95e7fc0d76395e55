"""Perceptual hashes: imagehash's phash bit for bit, batched; bad bytes marked, not raised."""

from __future__ import annotations

import io

import imagehash
import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from diffpath.io.phash import hamming, perceptual_hashes
from tests.conftest import SAMPLES


def test_hashes_are_imagehash_phash_bit_for_bit() -> None:
    images = pq.read_table(SAMPLES / "incoming.parquet", columns=["image"])["image"].to_pylist()
    hashes, decoded = perceptual_hashes(images)
    expected = [int(str(imagehash.phash(Image.open(io.BytesIO(b)))), 16) for b in images]
    assert decoded.all()
    assert hashes.tolist() == expected
    mirrored, _ = perceptual_hashes(images[:5], mirror=True)
    flipped = [
        Image.open(io.BytesIO(b)).transpose(Image.Transpose.FLIP_LEFT_RIGHT) for b in images[:5]
    ]
    assert mirrored.tolist() == [int(str(imagehash.phash(f)), 16) for f in flipped]


def test_bytes_that_are_not_an_image_are_marked_undecoded() -> None:
    good = pq.read_table(SAMPLES / "incoming.parquet", columns=["image"])["image"][0].as_py()
    hashes, decoded = perceptual_hashes([b"", b"not an image", good])
    assert decoded.tolist() == [False, False, True]
    assert hashes[2] == perceptual_hashes([good])[0][0]


def test_hamming_counts_differing_bits() -> None:
    a = np.array([0, 2**64 - 1, 0b1011], dtype=np.uint64)
    b = np.array([0, 0, 0b0110], dtype=np.uint64)
    assert hamming(a, b).tolist() == [0, 64, 3]
    assert hamming(a[:, None], b[None, :]).shape == (3, 3)
    assert hamming(a[1], b[1]) == 64  # scalars too, without an overflow warning
