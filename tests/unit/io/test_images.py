import contextlib
import io

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from diffpath.config import CROPS
from diffpath.errors import DecodeError
from diffpath.io.images import decode_image, decode_images

CELEBA_FACE_BOX = CROPS["celeba-face"]


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def gradient(width: int = 40, height: int = 30) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint8)
    y = np.linspace(0, 255, height, dtype=np.uint8)
    rgb = np.stack(np.broadcast_arrays(x[None, :], y[:, None], np.full((height, width), 128)), -1)
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def test_rgb_png_to_range_and_shape() -> None:
    tensor = decode_image(encode(gradient(), "PNG"), "a.png", size=16)
    assert tensor.shape == (3, 16, 16) and tensor.dtype == torch.float32
    assert tensor.min() >= -1 and tensor.max() <= 1


@pytest.mark.parametrize(
    "mode",
    ["L", "P", "RGBA", "LA", "CMYK", "I;16", "1"],
)
def test_every_mode_becomes_rgb(mode: str) -> None:
    image = gradient().convert("L" if mode == "I;16" else mode).convert(mode)  # Pillow 10.0
    fmt = "JPEG" if mode == "CMYK" else ("TIFF" if mode == "I;16" else "PNG")
    tensor = decode_image(encode(image, fmt), f"img.{fmt.lower()}", size=8)
    assert tensor.shape == (3, 8, 8)
    assert torch.isfinite(tensor).all()


def test_transparent_pixels_become_white() -> None:
    image = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    tensor = decode_image(encode(image, "PNG"), "clear.png", size=8)
    assert torch.allclose(tensor, torch.ones_like(tensor))


def test_exif_orientation_is_applied() -> None:
    image = Image.new("RGB", (20, 10), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 10, 10))  # white left half
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    data = encode(image, "PNG", exif=exif)
    tensor = decode_image(data, "rot.png", size=10)
    # displayed image is 10 wide, 20 tall; its centre square is split top (white) / bottom (black)
    assert tensor[:, :4].mean() > 0.9 and tensor[:, -4:].mean() < -0.9


def test_center_crop_takes_the_middle() -> None:
    image = Image.new("RGB", (30, 30), (0, 0, 0))
    image.paste((255, 255, 255), (10, 10, 20, 20))
    tensor = decode_image(encode(image, "PNG"), "c.png", size=10, center_crop=10)
    assert torch.allclose(tensor, torch.ones_like(tensor))


def face_frame() -> Image.Image:
    """A smooth random 178×218 frame (the aligned CelebA layout)."""
    rng = np.random.default_rng(0)
    frame = Image.fromarray(rng.integers(0, 256, (218 // 8, 178 // 8, 3), dtype=np.uint8))
    return frame.resize((178, 218), Image.Resampling.BICUBIC)


@pytest.mark.parametrize("crop", ["celeba-face", "0.8", "0.1,0.2,0.9,0.7"])
def test_a_crop_keeps_one_region_at_every_resolution(crop) -> None:
    """The same frame stored at 178, 356 and 712 px gives one model input with a crop given
    in fractions; a pixel crop (older references) takes another region at each size."""
    frame = face_frame()
    sizes = [frame.resize((178 * k, 218 * k), Image.Resampling.BICUBIC) for k in (1, 2, 4)]
    inputs = [decode_image(encode(im, "PNG"), "f.png", 32, crop) for im in sizes]
    pixel = [decode_image(encode(im, "PNG"), "f.png", 32, center_crop=140) for im in sizes]
    for other, by_pixels in zip(inputs[1:], pixel[1:], strict=True):
        assert (other - inputs[0]).abs().mean() < 0.02
        assert (by_pixels - pixel[0]).abs().mean() > 10 * (other - inputs[0]).abs().mean()


def test_the_face_crop_is_the_old_140_px_crop_on_a_celeba_frame() -> None:
    frame = encode(face_frame(), "PNG")
    named = decode_image(frame, "f.png", 32, "celeba-face")
    assert (named - decode_image(frame, "f.png", 32, center_crop=140)).abs().mean() < 0.01


def test_an_empty_file_says_so() -> None:
    with pytest.raises(DecodeError, match="empty file"):
        decode_image(b"", "nightly/0001.jpg")


def test_resize_via_gives_every_image_the_same_detail() -> None:
    """DiffPath's protocol for a 64-px model: a sharp 64-px picture and its 32-px copy both
    go through 32 px, so a 64-px model cannot tell them apart by blur alone."""
    rng = np.random.default_rng(0)
    sharp = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    small = sharp.resize((32, 32), Image.Resampling.BICUBIC)
    via = [decode_image(encode(im, "PNG"), "x.png", size=64, via=32) for im in (sharp, small)]
    direct = [decode_image(encode(im, "PNG"), "x.png", size=64) for im in (sharp, small)]
    assert via[0].shape == (3, 64, 64)
    assert (via[0] - via[1]).abs().mean() < 0.01 < (direct[0] - direct[1]).abs().mean()


def test_crop_box_finds_the_same_face_in_a_squashed_frame() -> None:
    """A 178x218 frame and the same frame squashed to 64x64 give one face through the box."""
    rng = np.random.default_rng(0)
    frame = Image.fromarray(rng.integers(0, 256, (218, 178, 3), dtype=np.uint8))
    frame = frame.resize((178 // 4, 218 // 4)).resize((178, 218), Image.Resampling.BICUBIC)
    squashed = frame.resize((64, 64), Image.Resampling.LANCZOS)
    face = decode_image(encode(frame, "PNG"), "full.png", size=32, center_crop=140)
    boxed = decode_image(encode(squashed, "PNG"), "small.png", size=32, crop=CELEBA_FACE_BOX)
    shift = 0.04
    left, top, right, bottom = CELEBA_FACE_BOX
    moved = (left, top + shift, right, bottom + shift)
    shifted = decode_image(encode(squashed, "PNG"), "small.png", size=32, crop=moved)
    assert boxed.shape == (3, 32, 32)
    assert (boxed - face).abs().mean() < 0.5 * (shifted - face).abs().mean()
    same = decode_image(encode(frame, "PNG"), "full.png", size=32, crop=CELEBA_FACE_BOX)
    assert (same - face).abs().mean() < 0.02  # on the full frame the box is center_crop=140


def test_celeba_extra_faces_line_up_with_celeba(shared_data) -> None:
    import pyarrow.parquet as pq

    def mean_face(name: str, **crop) -> torch.Tensor:
        rows = pq.read_table(shared_data / name / "train.parquet").slice(0, 200).to_pylist()
        return torch.stack([decode_image(r["image"], r["path"], 32, **crop) for r in rows]).mean(0)

    target = mean_face("celeba", center_crop=140)
    error = (mean_face("celeba-extra", crop=CELEBA_FACE_BOX) - target).abs().mean()
    left, top, right, bottom = CELEBA_FACE_BOX
    moved = (left, top + 0.05, right, bottom + 0.05)
    assert error < 0.7 * (mean_face("celeba-extra", crop=moved) - target).abs().mean()


def test_undecodable_bytes_raise_decode_error_with_key() -> None:
    with pytest.raises(DecodeError, match=r"broken/0001\.jpg"):
        decode_image(b"not an image", "broken/0001.jpg")


def test_decode_images_records_failures_per_item() -> None:
    good = encode(gradient(), "PNG")
    items = [("a", good), ("bad", b"\x00\x01"), ("b", good)]
    images, decoded, errors = decode_images(items, size=8)
    assert decoded == [0, 2] and images.shape == (2, 3, 8, 8)
    assert list(errors) == [1] and "'bad'" in errors[1]


def test_jpeg_dataset_sample_decodes(shared_data) -> None:
    import pyarrow.parquet as pq

    table = pq.read_table(shared_data / "celeba" / "test.parquet").slice(0, 2)
    for row in table.to_pylist():
        tensor = decode_image(row["image"], row["path"], size=32, center_crop=140)
        assert tensor.shape == (3, 32, 32)


def test_unknown_bytes_say_so_without_object_addresses() -> None:
    with pytest.raises(DecodeError) as raised:
        decode_image(b"<svg xmlns='http://www.w3.org/2000/svg'/>", "x.jpg")
    assert str(raised.value) == "cannot decode image 'x.jpg': not a known image format"


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=4096), size=st.sampled_from([8, 32]))
def test_arbitrary_bytes_give_an_image_or_a_decode_error(data: bytes, size: int) -> None:
    """Fuzz the one decode path: whatever the bytes, only `DecodeError` may come out."""
    try:
        image = decode_image(data, "fuzz", size)
    except DecodeError as err:
        assert str(err).startswith("cannot decode image 'fuzz'")
    else:
        assert image.shape == (3, size, size) and torch.isfinite(image).all()


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 3), st.binary(min_size=1, max_size=64), st.integers(0, 2000))
def test_damaged_real_images_give_an_image_or_a_decode_error(kind, junk, at) -> None:
    """Valid PNG/JPEG/GIF/WebP bytes with junk spliced in (bad CRCs, truncation)."""
    data = encode(gradient(), ["PNG", "JPEG", "GIF", "WEBP"][kind])
    damaged = data[:at] + junk + data[at + len(junk) :]
    with contextlib.suppress(DecodeError):  # anything else fails the test
        assert decode_image(damaged, "damaged", 16).shape == (3, 16, 16)


@pytest.mark.hostile(
    (
        "64 distinct decompression bombs (81M pixels) decoded at once in 8 threads",
        "every one refused; warning filters untouched",
    ),
)
def test_bombs_are_refused_in_every_thread_without_touching_warning_filters() -> None:
    import warnings
    from concurrent.futures import ThreadPoolExecutor

    from tests.integration.test_bad_inputs import png_bomb

    filters = list(warnings.filters)
    bombs = [png_bomb(9_000 + i) for i in range(64)]  # 81M+ pixels each, distinct bytes

    def refused(data: bytes) -> bool:
        with contextlib.suppress(DecodeError):
            decode_image(data, "bomb.png")
            return False
        return True

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(refused, bombs))
    assert warnings.filters == filters
