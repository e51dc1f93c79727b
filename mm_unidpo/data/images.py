"""Opening the images of preference records safely: confined paths, a pixel limit, RGB output.

Every image a record refers to is checked once at load time with `check_image`, which reads only the
header (size and format), so a dataset of thousands of photos validates quickly; pixels are decoded
later, per batch, with `load_image`. Both raise `BadRecordError` naming the record:

* `image_outside_root`: a path that resolves (after `..` and symlinks) outside the dataset's image
  root; data files are untrusted input and must not make us read arbitrary files.
* `missing_image`: no such file.
* `corrupt_image`: not an image PIL can identify or decode (a truncated file is only found when decoded).
* `image_too_large`: more pixels than `max_pixels`, checked from the header before decoding, so a
  decompression bomb never allocates its pixels.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps

from .records import BadRecordError, ImageRef, PromptFields

# 67M pixels (e.g. 8192x8192): far above what any vision tower uses, well below what exhausts memory
# (an RGB image of this size is ~200 MB decoded). PIL's own bomb limit (~179M pixels) stays as a backstop.
DEFAULT_MAX_PIXELS = 4096 * 4096 * 4

_WHITE = (255, 255, 255, 255)


def resolve_image_path(
    path: str | os.PathLike, image_root: str | os.PathLike | None, record: PromptFields | None = None
) -> Path:
    """The absolute path of an image, refusing one that resolves outside `image_root`.

    Relative paths are joined to `image_root`; absolute paths are allowed only inside it. Symlinks are
    resolved before the check, so a link inside the root pointing elsewhere is refused too. With
    `image_root=None` (records built in code, never by the loaders) paths are trusted as they are.
    """
    if image_root is None:
        return Path(path).resolve()
    root = Path(image_root).resolve()
    resolved = (root / path).resolve()  # an absolute `path` replaces root here
    if not resolved.is_relative_to(root):
        raise BadRecordError(
            record, "image_outside_root", f"image path {str(path)!r} resolves outside the image root {str(root)!r}"
        )
    return resolved


def _open(ref: ImageRef, image_root: str | os.PathLike | None, record: PromptFields | None) -> Image.Image:
    """Open an image lazily (header only). The caller closes it."""
    if isinstance(ref, Image.Image):
        return ref
    if isinstance(ref, (bytes, bytearray)):
        source: Path | io.BytesIO = io.BytesIO(ref)
        what = f"embedded image ({len(ref)} bytes)"
    elif isinstance(ref, (str, os.PathLike)):
        source = resolve_image_path(ref, image_root, record)
        what = f"image {str(ref)!r}"
        if not source.is_file():
            raise BadRecordError(record, "missing_image", f"{what} not found at {str(source)!r}")
    else:
        raise BadRecordError(record, "missing_image", f"unsupported image reference of type {type(ref).__name__}")
    try:
        return Image.open(source)
    except Image.DecompressionBombError as e:
        raise BadRecordError(record, "image_too_large", f"{what}: {e}") from None
    except Exception as e:  # noqa: BLE001 -- PIL raises many types (OSError, SyntaxError, ValueError...) on bad files
        raise BadRecordError(record, "corrupt_image", f"{what} cannot be read: {e}") from None


def _check_size(image: Image.Image, max_pixels: int | None, record: PromptFields | None, what: str) -> None:
    width, height = image.size
    if width <= 0 or height <= 0:
        raise BadRecordError(record, "corrupt_image", f"{what} has size {width}x{height}")
    if max_pixels is not None and width * height > max_pixels:
        raise BadRecordError(
            record,
            "image_too_large",
            f"{what} is {width}x{height} = {width * height} pixels, above the limit of "
            f"{max_pixels} (raise max_image_pixels if this is intended)",
        )


def _describe(ref: ImageRef) -> str:
    if isinstance(ref, Image.Image):
        return "in-memory image"
    if isinstance(ref, (bytes, bytearray)):
        return f"embedded image ({len(ref)} bytes)"
    return f"image {str(ref)!r}"


def check_image(
    ref: ImageRef,
    image_root: str | os.PathLike | None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    *,
    record: PromptFields | None = None,
) -> tuple[int, int]:
    """Validate an image from its header only (no pixel decoding); returns its (width, height)."""
    image = _open(ref, image_root, record)
    try:
        _check_size(image, max_pixels, record, _describe(ref))
        return image.size
    finally:
        if image is not ref:
            image.close()


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB the way a viewer would show it.

    Transparency (RGBA, LA, PA, palette or grayscale with a transparent color) is composited on white
    rather than dropped, since dropping alpha often reveals garbage in fully transparent pixels. 16-bit
    and 32-bit integer grayscale are scaled down (PIL's own conversion clips them to 255, i.e. white).
    Always returns a new image.
    """
    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        array: np.ndarray = np.asarray(image).astype(np.int64)
        # "I" is how some PIL versions/plugins hold 16-bit data: scale when values exceed 8 bits.
        if mode != "I" or array.max(initial=0) > 255:
            array = np.clip(array, 0, 65535) >> 8
        image = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))  # uint8 2-D: mode L
    elif mode == "F":
        array = np.asarray(image, dtype=np.float64)
        if np.nanmax(array, initial=0.0) <= 1.0:  # float images are usually in [0, 1]
            array = array * 255.0
        image = Image.fromarray(np.clip(np.nan_to_num(array), 0, 255).astype(np.uint8))
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE)
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_image(
    ref: ImageRef,
    image_root: str | os.PathLike | None,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    record: PromptFields | None = None,
) -> Image.Image:
    """Decode an image to RGB, checking its size from the header first.

    EXIF orientation is applied (as `datasets` does when it decodes images), so photos are upright.
    """
    what = _describe(ref)
    opened = _open(ref, image_root, record)
    try:
        _check_size(opened, max_pixels, record, what)
        try:
            with _strict_decoding():
                opened.load()
            image = opened
            if image.getexif().get(Image.ExifTags.Base.Orientation) is not None:
                image = ImageOps.exif_transpose(image)
            return to_rgb(image)
        except Image.DecompressionBombError as e:
            raise BadRecordError(record, "image_too_large", f"{what}: {e}") from None
        except Exception as e:  # noqa: BLE001 -- truncated data, bad chunks...: PIL raises assorted types
            raise BadRecordError(record, "corrupt_image", f"{what} cannot be decoded: {e}") from None
    finally:
        if opened is not ref:
            opened.close()


@contextmanager
def _strict_decoding() -> Iterator[None]:
    """Decode with PIL's truncated-image tolerance off: libraries set it globally (lmms-eval does on import),
    which would turn a truncated file into a silently grey-padded image instead of a corrupt_image."""
    saved = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = saved


def load_record_images(record: PromptFields, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> list[Image.Image]:
    """All images of a record, decoded to RGB, resolved against the record's `image_root`."""
    return [load_image(ref, record.image_root, max_pixels=max_pixels, record=record) for ref in record.images]
