"""Image bytes → model input: one decode path for every dataset.

Every image, whatever its source format, goes through `decode_image` so that the detector
never learns compression or colour-mode artefacts of one dataset. Output is an RGB float
tensor in [-1, 1] of shape (3, S, S).
"""

from __future__ import annotations

import io
import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from diffpath.config import CropBox, parse_crop
from diffpath.errors import DecodeError

__all__ = [
    "IMAGE_EXTENSIONS",
    "CropBox",
    "decode_batches",
    "decode_image",
    "decode_images",
    "open_rgb",
    "to_rgb",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


# Refuse decompression bombs (checked on the header, before any pixel is decoded) rather
# than allocate gigabytes for one malicious file.
MAX_PIXELS = 64_000_000


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparency is composited over white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        scaled = (array - low) / (high - low) * 255.0 if high > low else np.zeros_like(array)
        image = Image.fromarray(scaled.round().astype(np.uint8), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def _crop_and_resize(
    image: Image.Image,
    size: int,
    crop: str | CropBox | None = None,
    center_crop: int | None = None,
    via: int | None = None,
) -> Image.Image:
    """The square model input of an image: its `crop` (fractions, so the same region at any
    resolution; see `parse_crop`), else a central square of `center_crop` px (older
    references) or of the short side, resized to `size` — through `via` px first if given
    (every image then carries `via` px of detail)."""
    first = via or size
    width, height = image.size
    if crop is not None:
        region = parse_crop(crop)
        if isinstance(region, float):  # the central square, a fraction of the short side
            side = region * min(width, height)
            left, top = (width - side) / 2, (height - side) / 2
            box = (left, top, left + side, top + side)
        else:
            box = (region[0] * width, region[1] * height, region[2] * width, region[3] * height)
        square = image.resize((first, first), Image.Resampling.BICUBIC, box=box)
    else:
        side = min(center_crop or min(width, height), width, height)
        left, top = (width - side) // 2, (height - side) // 2
        square = image.crop((left, top, left + side, top + side))
        if side != first:
            square = square.resize((first, first), Image.Resampling.BICUBIC)  # antialiased
    if first != size:
        square = square.resize((size, size), Image.Resampling.BICUBIC)
    return square


def open_rgb(data: bytes, key: str) -> Image.Image:
    """Encoded image bytes → an 8-bit RGB image, EXIF orientation applied, the first frame of
    an animation. Raises `DecodeError` naming `key` when the bytes are not an image or hold
    more than `MAX_PIXELS` (checked on the header, before any pixel is decoded)."""
    if not data:
        raise DecodeError(f"cannot decode image {key!r}: empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as opened:
            if opened.width * opened.height > MAX_PIXELS:
                raise DecodeError(
                    f"cannot decode image {key!r}: {opened.width}×{opened.height} pixels is "
                    f"over the {MAX_PIXELS:,} limit (a decompression bomb?)"
                )
            opened.seek(0)
            image = ImageOps.exif_transpose(opened)
            image.load()
            return to_rgb(image)
    except DecodeError:
        raise
    except UnidentifiedImageError as err:
        raise DecodeError(f"cannot decode image {key!r}: not a known image format") from err
    except Exception as err:  # Pillow raises many unrelated types for bad bytes
        raise DecodeError(f"cannot decode image {key!r}: {err}") from err


def decode_image(
    data: bytes,
    key: str,
    size: int = 32,
    crop: str | CropBox | None = None,
    center_crop: int | None = None,
    via: int | None = None,
) -> torch.Tensor:
    """Decode encoded image bytes to a (3, size, size) float tensor in [-1, 1].

    Any mode is converted to RGB (`open_rgb`); `crop`, `center_crop` and `via` are
    `_crop_and_resize`'s (a config's are `FeatureConfig.geometry`). Raises `DecodeError`
    naming `key` when the bytes are not an image.
    """
    image = open_rgb(data, key)
    pixels = np.asarray(_crop_and_resize(image, size, crop, center_crop, via), dtype=np.float32)
    return torch.from_numpy(pixels).permute(2, 0, 1) / 127.5 - 1.0


def decode_images(
    items: Sequence[tuple[str, bytes]],
    size: int = 32,
    crop: str | CropBox | None = None,
    center_crop: int | None = None,
    via: int | None = None,
) -> tuple[torch.Tensor, list[int], dict[int, str]]:
    """Decode many (name, bytes) pairs; failures are returned per item, never raised.

    Returns the stacked images (N, 3, size, size), the indices of `items` they come from
    and {index: error message naming the item}.
    """
    tensors, decoded, errors = [], [], {}
    for i, (name, data) in enumerate(items):
        try:
            tensors.append(decode_image(data, name, size, crop, center_crop, via))
            decoded.append(i)
        except DecodeError as err:
            errors[i] = str(err)
    stacked = torch.stack(tensors) if tensors else torch.empty(0, 3, size, size)
    return stacked, decoded, errors


def decode_batches(
    items: Sequence[tuple[str, bytes]],
    batch_size: int,
    size: int = 32,
    crop: str | CropBox | None = None,
    center_crop: int | None = None,
    via: int | None = None,
    workers: int | None = None,
) -> Iterator[tuple[torch.Tensor, list[int], dict[int, str]]]:
    """`decode_images` of consecutive batches of `items`, decoded on a thread pool a bounded
    number of batches ahead of the consumer, so decoding overlaps the model. Indices in
    each result refer to `items`; batches come in order."""
    workers = workers or min(8, os.cpu_count() or 1)

    def decode(start: int) -> tuple[torch.Tensor, list[int], dict[int, str]]:
        images, decoded, errors = decode_images(
            items[start : start + batch_size], size, crop, center_crop, via
        )
        return images, [start + i for i in decoded], {start + i: e for i, e in errors.items()}

    with ThreadPoolExecutor(workers, thread_name_prefix="decode") as pool:
        pending: deque = deque()
        for start in range(0, len(items), batch_size):
            pending.append(pool.submit(decode, start))
            if len(pending) > workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
