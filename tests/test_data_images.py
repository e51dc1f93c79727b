"""Image loading: RGB conversion of real photos and odd modes, path confinement, pixel limits, corrupt data."""

from __future__ import annotations

import io
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mm_unidpo.data import (BadRecordError, PreferenceRecord, check_image, load_image, load_record_images,
                            resolve_image_path, to_rgb)

PHOTOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "images"
needs_photos = pytest.mark.skipif(not (PHOTOS / "horse.png").is_file(),
                                  reason=f"real test photos not found in {PHOTOS}")


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """The shared photos copied into tmp_path (never into the repository)."""
    if not PHOTOS.is_dir():
        pytest.skip(f"real test photos not found in {PHOTOS}")
    root = tmp_path / "root"
    shutil.copytree(PHOTOS, root)
    return root


def png_header(width: int, height: int) -> bytes:
    """A PNG with only an IHDR claiming `width`x`height` (no pixel data): a decompression-bomb stand-in."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


# --- real photos ---------------------------------------------------------------------------------

@needs_photos
@pytest.mark.parametrize("name, source_mode", [
    ("astronaut.png", "RGB"), ("camera.png", "L"), ("chelsea.png", "RGB"), ("coffee.png", "RGB"),
    ("horse.png", "RGBA"), ("motorcycle_left.png", "RGB"), ("rocket.jpg", "RGB"),
])
def test_real_photos_load_as_rgb(photos, name, source_mode):
    with Image.open(photos / name) as original:
        assert original.mode == source_mode
        size = original.size
    assert check_image(name, photos) == size
    image = load_image(name, photos)
    assert image.mode == "RGB" and image.size == size


@needs_photos
def test_grayscale_photo_keeps_its_values(photos):
    gray = np.asarray(Image.open(photos / "camera.png"))
    rgb = np.asarray(load_image("camera.png", photos))
    assert all((rgb[..., c] == gray).all() for c in range(3))


@needs_photos
def test_rgba_photo_is_composited_on_white(photos):
    rgba = np.asarray(Image.open(photos / "horse.png")).astype(float)
    rgb = np.asarray(load_image("horse.png", photos)).astype(float)
    alpha = rgba[..., 3:] / 255.0
    assert (alpha < 1).any()  # horse.png has a few translucent pixels
    expected = rgba[..., :3] * alpha + 255.0 * (1 - alpha)
    assert np.abs(rgb - expected).max() <= 1.0


def test_transparent_pixels_become_white_not_their_hidden_color():
    image = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    image.putpixel((1, 0), (10, 20, 30, 255))
    rgb = load_image(encoded(image), None)
    assert [rgb.getpixel((x, 0)) for x in range(2)] == [(255, 255, 255), (10, 20, 30)]


@needs_photos
def test_bytes_and_pil_refs(photos):
    data = (photos / "rocket.jpg").read_bytes()
    assert load_image(data, None).size == (640, 427)
    pil = Image.open(photos / "horse.png")
    assert load_image(pil, None).mode == "RGB"
    assert check_image(pil, None) == (400, 328)


@needs_photos
def test_load_record_images_uses_record_root(photos):
    record = PreferenceRecord(prompt="<image><image>", chosen="a", rejected="b",
                              images=["camera.png", (photos / "coffee.png").read_bytes()], image_root=str(photos))
    assert [im.size for im in load_record_images(record)] == [(512, 512), (600, 400)]


# --- synthetic modes -----------------------------------------------------------------------------

def test_palette_with_transparency_composited_on_white():
    image = Image.new("P", (4, 1))
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.putdata([0, 1, 0, 1])
    image.info["transparency"] = 1
    rgb = load_image(encoded(image), None)
    assert [rgb.getpixel((x, 0)) for x in range(4)] == [(255, 0, 0), (255, 255, 255), (255, 0, 0), (255, 255, 255)]


def test_la_cmyk_one_bit_and_float_modes():
    la = Image.new("LA", (2, 2), (10, 0))
    assert to_rgb(la).getpixel((0, 0)) == (255, 255, 255)
    cmyk = Image.new("CMYK", (2, 2), (0, 255, 255, 0))
    assert load_image(encoded(cmyk, "JPEG"), None).getpixel((0, 0))[0] > 200  # red-ish
    assert to_rgb(Image.new("1", (2, 2), 1)).getpixel((0, 0)) == (255, 255, 255)
    assert to_rgb(Image.new("F", (2, 2), 0.5)).getpixel((0, 0)) == (127, 127, 127)


def test_sixteen_bit_grayscale_is_scaled_not_clipped():
    array = np.array([[0, 32768], [65535, 256]], dtype=np.uint16)
    image = Image.fromarray(array)
    assert image.mode == "I;16"
    rgb = load_image(encoded(image), None)  # PNG round trip: PIL reopens it as I;16 or I
    assert [rgb.getpixel(p)[0] for p in ((0, 0), (1, 0), (0, 1), (1, 1))] == [0, 128, 255, 1]
    assert to_rgb(image).getpixel((1, 0)) == (128, 128, 128)


def test_exif_orientation_applied():
    image = Image.new("RGB", (4, 2))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    assert load_image(buffer.getvalue(), None).size == (2, 4)


# --- paths ---------------------------------------------------------------------------------------

def test_paths_outside_root_are_refused(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    outside = tmp_path / "secret.png"
    Image.new("RGB", (2, 2)).save(outside)
    Image.new("RGB", (2, 2)).save(root / "sub" / "ok.png")
    record = PreferenceRecord(prompt="<image>", chosen="a", rejected="b", id="x9", index=5)
    for path in ("../secret.png", "sub/../../secret.png", str(outside), "/etc/passwd"):
        with pytest.raises(BadRecordError) as info:
            check_image(path, root, record=record)
        assert info.value.reason == "image_outside_root", path
        assert "record 5 (id='x9')" in str(info.value)
    # inside: relative, with harmless `..`, and absolute
    for path in ("sub/ok.png", "sub/../sub/ok.png", str(root / "sub" / "ok.png")):
        assert check_image(path, root) == (2, 2)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks on this platform")
def test_symlink_escaping_root_is_refused_but_inner_symlink_allowed(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "secret.png"
    Image.new("RGB", (2, 2)).save(outside)
    (root / "escape.png").symlink_to(outside)
    (root / "dir_escape").symlink_to(tmp_path)
    Image.new("RGB", (3, 3)).save(root / "real.png")
    (root / "alias.png").symlink_to(root / "real.png")
    for path in ("escape.png", "dir_escape/secret.png"):
        with pytest.raises(BadRecordError, match="image_outside_root"):
            load_image(path, root)
    assert load_image("alias.png", root).size == (3, 3)


def test_symlinked_root_itself_is_fine(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    Image.new("RGB", (2, 2)).save(real / "a.png")
    (tmp_path / "link").symlink_to(real)
    assert check_image("a.png", tmp_path / "link") == (2, 2)
    assert resolve_image_path("a.png", tmp_path / "link") == (real / "a.png").resolve()


def test_missing_file_and_directory(tmp_path):
    (tmp_path / "adir").mkdir()
    record = PreferenceRecord(prompt="<image>", chosen="a", rejected="b", id="m1", index=0)
    for path in ("nope.png", "adir"):
        with pytest.raises(BadRecordError) as info:
            load_image(path, tmp_path, record=record)
        assert info.value.reason == "missing_image"
        assert "record 0 (id='m1')" in str(info.value) and path in str(info.value)


# --- corrupt data and size limits ----------------------------------------------------------------

def test_corrupt_bytes_and_files(tmp_path):
    (tmp_path / "fake.png").write_bytes(b"this is not an image")
    for ref in (b"\x00\x01garbage", "fake.png"):
        with pytest.raises(BadRecordError) as info:
            check_image(ref, tmp_path)
        assert info.value.reason == "corrupt_image"


def test_truncated_file_passes_header_check_but_not_decoding(tmp_path):
    data = encoded(Image.effect_noise((64, 64), 50).convert("RGB"), "PNG")
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    assert check_image("cut.png", tmp_path) == (64, 64)  # header only: cheap, cannot see the cut
    with pytest.raises(BadRecordError, match="corrupt_image"):
        load_image("cut.png", tmp_path)


@needs_photos
def test_pixel_limit_on_real_photo(photos):
    with pytest.raises(BadRecordError, match="image_too_large.*512x512"):
        check_image("astronaut.png", photos, max_pixels=512 * 512 - 1)
    assert check_image("astronaut.png", photos, max_pixels=512 * 512) == (512, 512)
    assert check_image("astronaut.png", photos, max_pixels=None) == (512, 512)
    with pytest.raises(BadRecordError, match="image_too_large"):
        load_image("astronaut.png", photos, max_pixels=1000)


def test_bomb_header_refused_before_decoding():
    # 9000x9000 = 81M pixels: below PIL's own limit, above ours; PIL never decodes it.
    with pytest.raises(BadRecordError, match="image_too_large.*9000x9000"):
        check_image(png_header(9000, 9000), None)
    with pytest.raises(BadRecordError, match="image_too_large"):
        load_image(png_header(9000, 9000), None)
    # 100000^2 pixels: PIL itself raises DecompressionBombError on open; still image_too_large.
    with pytest.raises(BadRecordError, match="image_too_large"):
        check_image(png_header(100_000, 100_000), None, max_pixels=None)
