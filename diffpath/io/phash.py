"""Perceptual hashes: 64 bits that survive re-encoding, resizing and brightness changes.

The hash is imagehash's `phash` (the sign of each of the 8×8 lowest DCT frequencies of the
32×32 greyscale image against their median), bit for bit, computed on a batch at once:
imagehash spends ~0.5 ms an image in per-image Python and SciPy calls, this ~0.05 ms
beyond the decode (`tests/unit/io/test_phash.py` checks the bits against imagehash's).
Near copies differ in a few bits; distinct images in ~32 (docs/nearcopy.md).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image, ImageOps
from scipy.fft import dct

from diffpath.errors import DecodeError
from diffpath.io.images import open_rgb

__all__ = ["HASH_BITS", "hamming", "perceptual_hashes"]

HASH_BITS = 64
_SIDE, _LOW = 32, 8  # the greyscale image's side, the low-frequency block's side
_U = np.uint64


def _thumbnail(data: bytes, mirror: bool) -> np.ndarray | None:
    """The 32×32 greyscale pixels of an image (mirrored left-right), None if not an image."""
    try:
        image = open_rgb(data, "")
    except DecodeError:
        return None
    if mirror:
        image = ImageOps.mirror(image)
    small = image.convert("L").resize((_SIDE, _SIDE), Image.Resampling.LANCZOS)
    return np.asarray(small, dtype=np.float64)


def perceptual_hashes(
    contents: Sequence[bytes], mirror: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(hashes (N,) uint64, decoded (N,) bool) of encoded images, or of their mirror images
    with `mirror`; an image that does not decode has hash 0 and `decoded` False."""
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers, thread_name_prefix="phash") as pool:
        pixels = list(pool.map(lambda data: _thumbnail(data, mirror), contents))
    decoded = np.array([p is not None for p in pixels], dtype=bool)
    hashes = np.zeros(len(contents), dtype=np.uint64)
    if decoded.any():
        stack = np.stack([p for p in pixels if p is not None])
        low = dct(dct(stack, axis=1), axis=2)[:, :_LOW, :_LOW].reshape(len(stack), -1)
        bits = low > np.median(low, axis=1, keepdims=True)
        hashes[decoded] = np.packbits(bits, axis=1).view(">u8")[:, 0]
    return hashes, decoded


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bits that differ between uint64 hashes `a` and `b` (elementwise, broadcast): a
    branch-free popcount in uint64 arithmetic, on any numpy."""
    x = np.bitwise_xor(a, b).astype(np.uint64)
    x = x - ((x >> _U(1)) & _U(0x5555555555555555))
    x = (x & _U(0x3333333333333333)) + ((x >> _U(2)) & _U(0x3333333333333333))
    x = (x + (x >> _U(4))) & _U(0x0F0F0F0F0F0F0F0F)
    with np.errstate(over="ignore"):  # the byte sums land in the top byte; the rest wraps
        return ((x * _U(0x0101010101010101)) >> _U(56)).astype(np.int64)
