"""Corrupted views of a record's images: the contrast image of the image-side terms (losses/image.py).

    data.corruption: {kind: crop, seed: 0}          # or noise (with noise_step), blank, shuffle

Every view is a pure function of (the corruption settings, the record's id — its index where it has
none —, the image's position): each record draws from its own generator seeded by a hash of those, so
the reference cache, a resumed run and every process of a multi-process run see the same corrupted
image, whatever the order or sharding. `Corruption.key()` goes into the reference-cache key.

    crop     mDPO's RandomResizedCrop(scale=(0.01, 0.2)) (arXiv 2406.11839; luka-group/mDPO applies
             torchvision's v2.RandomResizedCrop to the pixel tensor): a crop of 1–20% of the area, aspect
             ratio in [3/4, 4/3] (log-uniform), resized back to the image's size (bilinear); torchvision's
             sampling (10 tries, then the whole image) with PIL.
    noise    CHiP's forward-diffusion noise (arXiv 2501.16629; LVUGAI/CHiP `add_diffusion_noise`):
             x_t = √ᾱ_t·x_0 + √(1 − ᾱ_t)·ε, ε ~ N(0, I), with CHiP's schedule of T = 1000 steps
             β_t = σ(linspace(−6, 6, T))_t·(5e-3 − 1e-5) + 1e-5, ᾱ_t = Π_{s≤t}(1 − β_s), at step
             `noise_step` (CHiP's default 500: √ᾱ = 0.863, √(1 − ᾱ) = 0.505). CHiP noises the processor's
             normalised tensor; we noise x_0 = pixel/127.5 − 1 ∈ [−1, 1] and quantise back to 8 bits, so
             every family's processor sees an ordinary image.
    blank    a uniform mid-grey image of the same size (128: about 0 after any processor's normalisation).
    shuffle  another record's image (chosen by the same seeded draw; image k of the record gets image
             k mod n of the other).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image

from .images import DEFAULT_MAX_PIXELS, load_image, load_record_images
from .records import BadRecordError, PromptFields

KINDS = ("crop", "noise", "blank", "shuffle")
DIFFUSION_STEPS = 1000
_KEYS = ("kind", "seed", "noise_step", "crop_scale")
_RATIO = (3 / 4, 4 / 3)
_GREY = (128, 128, 128)


@dataclass(frozen=True)
class Corruption:
    kind: str
    seed: int = 0
    noise_step: int = 500
    crop_scale: tuple[float, float] = (0.01, 0.2)

    def key(self) -> str:
        """What the reference cache keys on (every setting that changes a view)."""
        return json.dumps(asdict(self), sort_keys=True)


def parse_corruption(value: Any, where: str = "data.corruption") -> Corruption | None:
    """A `Corruption` from a config value (a kind name or a mapping), or None; a ValueError names the key."""
    if value is None:
        return None
    if isinstance(value, str):
        value = {"kind": value}
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be a kind ({', '.join(KINDS)}) or a mapping {{kind, seed, ...}}, got {value!r}")
    unknown = sorted(set(value) - set(_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; it takes {list(_KEYS)}")
    kind = value.get("kind")
    if kind not in KINDS:
        raise ValueError(f"{where}.kind must be one of {', '.join(KINDS)}, got {kind!r}")
    seed, step = value.get("seed", 0), value.get("noise_step", 500)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"{where}.seed must be an integer >= 0, got {seed!r}")
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step < DIFFUSION_STEPS:
        raise ValueError(f"{where}.noise_step must be an integer in [0, {DIFFUSION_STEPS - 1}], got {step!r}")
    scale = value.get("crop_scale", (0.01, 0.2))
    ok = (
        isinstance(scale, (list, tuple))
        and len(scale) == 2
        and all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in scale)
        and 0 < scale[0] <= scale[1] <= 1
    )
    if not ok:
        raise ValueError(f"{where}.crop_scale must be [low, high] with 0 < low <= high <= 1, got {scale!r}")
    return Corruption(kind, seed, step, (float(scale[0]), float(scale[1])))


def record_generator(corruption: Corruption, record: PromptFields, position: int = 0) -> np.random.Generator:
    """The generator of one image's view: seeded by a hash (not Python's salted `hash`) of the settings,
    the record's id (its index where it has none) and the image's position."""
    name = f"id={record.id}" if record.id is not None else f"index={record.index}"
    digest = hashlib.sha256(f"{corruption.key()}|{name}|{position}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def crop_box(size: tuple[int, int], rng: np.random.Generator, scale: tuple[float, float]) -> tuple[int, int, int, int]:
    """RandomResizedCrop's box (left, top, right, bottom): scale[0]–scale[1] of the area, aspect in
    [3/4, 4/3] log-uniform; torchvision's 10 tries, then the whole image (its fallback within the ratio)."""
    width, height = size
    log_ratio = (math.log(_RATIO[0]), math.log(_RATIO[1]))
    for _ in range(10):
        target = width * height * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
            return left, top, left + w, top + h
    return 0, 0, width, height


def random_resized_crop(image: Image.Image, rng: np.random.Generator, scale: tuple[float, float]) -> Image.Image:
    """The crop of `crop_box`, resized back to the image's size (bilinear)."""
    return image.resize(image.size, Image.Resampling.BILINEAR, box=crop_box(image.size, rng, scale))


def alpha_bar(step: int) -> float:
    """ᾱ_t of CHiP's schedule (the module docstring)."""
    t = np.linspace(-6.0, 6.0, DIFFUSION_STEPS)
    betas = 1 / (1 + np.exp(-t)) * (0.5e-2 - 1e-5) + 1e-5
    return float(np.prod(1 - betas[: step + 1]))


def diffusion_noise(image: Image.Image, rng: np.random.Generator, step: int) -> Image.Image:
    """x_t = √ᾱ_t·x_0 + √(1 − ᾱ_t)·ε on pixels scaled to [−1, 1], back to 8 bits."""
    x0 = np.asarray(image, dtype=np.float64) / 127.5 - 1.0
    a = alpha_bar(step)
    xt = math.sqrt(a) * x0 + math.sqrt(1 - a) * rng.standard_normal(x0.shape)
    return Image.fromarray(np.clip(np.rint((xt + 1.0) * 127.5), 0, 255).astype(np.uint8))


def contrast_images(
    record: PromptFields,
    corruption: Corruption,
    pool: Sequence[PromptFields] = (),
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> list[Image.Image]:
    """The corrupted views of `record`'s images (decoded RGB, one per image). `shuffle` draws the other
    record from `pool` (the dataset); a BadRecordError names the record when it has no image or no other
    record has one."""
    if not record.images:
        raise BadRecordError(record, "missing_image", f"data.corruption {corruption.kind!r} needs an image to corrupt")
    if corruption.kind == "shuffle":
        return _shuffled(record, corruption, pool, max_pixels)
    views = []
    for position, image in enumerate(load_record_images(record, max_pixels=max_pixels)):
        rng = record_generator(corruption, record, position)
        if corruption.kind == "crop":
            views.append(random_resized_crop(image, rng, corruption.crop_scale))
        elif corruption.kind == "noise":
            views.append(diffusion_noise(image, rng, corruption.noise_step))
        else:
            views.append(Image.new("RGB", image.size, _GREY))
    return views


def _shuffled(
    record: PromptFields, corruption: Corruption, pool: Sequence[PromptFields], max_pixels: int | None
) -> list[Image.Image]:
    rng = record_generator(corruption, record)
    start = int(rng.integers(len(pool))) if len(pool) else 0
    # From a seeded start, the next record (cyclically) that has an image and is not this one: O(1) per
    # record on a dataset of images, deterministic like the other views.
    other = next(
        (
            candidate
            for candidate in (pool[(start + k) % len(pool)] for k in range(len(pool)))
            if candidate.images and (candidate.index, candidate.id) != (record.index, record.id)
        ),
        None,
    )
    if other is None:
        raise BadRecordError(
            record, "missing_image", "data.corruption 'shuffle' needs another record with an image in the dataset"
        )
    refs = [other.images[k % len(other.images)] for k in range(len(record.images))]
    return [load_image(ref, other.image_root, max_pixels=max_pixels, record=other) for ref in refs]
