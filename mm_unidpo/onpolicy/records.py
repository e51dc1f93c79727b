"""Prompts in, sample lines out: the records the on-policy commands read and write.

`load_prompts` reads the prompts (and images) to sample from: any preference data that
`load_preference_data` reads (its chosen / rejected are ignored), or a prompts-only file whose rows have a
`prompt` (or `question`, `instruction`, `problem`), optional `images` / `image` and `id`; every other field
of a prompts-only row is kept as the record's `meta` (ground truth such as `objects`, a gold `answer`),
where judges find it.

A *sample line* (what `generate` writes, `judge` extends and `pairs` reads) is one JSON object per prompt:

    {"index": 0, "id": "...", "prompt": "<image>\\nDescribe the image.", "images": ["a.png"],
     "meta": {...}, "samples": [{"text": "...", "tokens": 17, "finish": "stop"}, ...], "input_sha256": "..."}

`judge` adds `score` (and judge details) to every sample. Image paths stay relative to the image root,
which a line never names: `generate`, `judge` and `pairs` each take `--image-root`, and a path that
leaves it is refused (a samples file from elsewhere cannot point a judge at other files). Embedded
images are written inline as {"bytes_b64": ...}, as `save_preference_data` does.
"""

from __future__ import annotations

import base64
import io
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from mm_unidpo.data import (
    DEFAULT_MAX_PIXELS,
    BadRecordError,
    ImageRef,
    Prompt,
    SkipReport,
    check_image,
    detect_format,
    load_preference_data,
    load_record_images,
    validate_prompt,
)
from mm_unidpo.data.formats import UnknownFormatError
from mm_unidpo.data.images import resolve_image_path
from mm_unidpo.data.sources import guarded, open_rows  # the data layer's row reader (files, saved datasets, hub ids)
from mm_unidpo.io import sha256_file, sha256_json

PROMPT_KEYS = ("prompt", "question", "instruction", "problem", "messages")
_ID_KEYS = ("id", "idx", "uid", "unique_id")
_IMAGE_KEYS = ("images", "image")


@dataclass
class PromptRecord:
    """One prompt to sample from: text or chat messages with image placeholders, its images, and the
    source row's other fields (`meta`). Meta fields also read as attributes (`record.objects`), so rule
    scorers written for `mm-unidpo score` (`fn(record, response)`) work on prompts too."""

    prompt: str | list[dict[str, Any]]
    images: list[ImageRef] = field(default_factory=list)
    id: str | None = None
    index: int | None = None
    image_root: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def where(self) -> str:
        return f"record {self.index if self.index is not None else '?'} (id={self.id!r})"

    def __getattr__(self, name: str) -> Any:
        meta = self.__dict__.get("meta") or {}
        if name in meta:
            return meta[name]
        raise AttributeError(name)

    def get(self, key: str, default: Any = None) -> Any:
        return self.meta.get(key, default)


@dataclass
class PromptData:
    records: list[PromptRecord]
    skips: SkipReport
    source: str


def _prompt_record(row: Mapping[str, Any], index: int, root: str) -> PromptRecord:
    rid = next((str(row[k]) for k in _ID_KEYS if row.get(k) not in (None, "")), None)
    key = next((k for k in PROMPT_KEYS if k in row), None)
    if key is None:
        raise BadRecordError(
            None,
            "missing_field",
            f"needs a prompt: one of the fields {', '.join(PROMPT_KEYS)}",
            index=index,
            record_id=rid,
        )
    prompt = row[key]
    if isinstance(prompt, str) and not prompt.strip():
        raise BadRecordError(None, "bad_prompt", f"{key} is empty", index=index, record_id=rid)
    image_key = next((k for k in _IMAGE_KEYS if row.get(k) is not None), None)
    images = row[image_key] if image_key else []
    # The data layer's checks of a prompt: its shape, image values, placeholders.
    record = validate_prompt(
        Prompt(prompt, images=images if isinstance(images, list) else [images], id=rid, index=index, image_root=root)
    )
    meta = {k: v for k, v in row.items() if k not in (key, image_key, *_ID_KEYS)}
    return PromptRecord(record.prompt, record.images, rid, index, root, meta)


def load_prompts(
    source: Any,
    *,
    format: str | None = None,
    split: str | None = "train",
    image_root: str | os.PathLike | None = None,
    on_bad_record: str = "error",
    max_image_pixels: int | None = DEFAULT_MAX_PIXELS,
    limit: int | None = None,
    decode: bool = False,
) -> PromptData:
    """The prompts of `source` (see the module doc). Preference data (detected from the first row, or
    `format` naming a preference format) goes through `load_preference_data`; a prompts-only source is
    read with the same row reader and checks. Bad rows raise `BadRecordError` naming the row, or are
    counted in `.skips` with `on_bad_record="skip"`. `decode`: decode every image now, not only its
    header, so a truncated file is a bad record here rather than a crash in the middle of sampling."""
    if on_bad_record not in ("error", "skip"):
        raise ValueError(f"on_bad_record must be 'error' or 'skip', got {on_bad_record!r}")
    if format in (None, "auto", "prompts") and (format == "prompts" or not _is_preference_data(source, split)):
        data = _load_prompt_rows(source, split, image_root, on_bad_record, max_image_pixels, limit)
    else:
        data = _load_preference_prompts(source, format, split, image_root, on_bad_record, max_image_pixels, limit)
    return _decoded(data, on_bad_record, max_image_pixels) if decode else data


def _decoded(data: PromptData, on_bad_record: str, max_image_pixels: int | None) -> PromptData:
    return _kept(data, lambda record: load_record_images(record, max_pixels=max_image_pixels), on_bad_record)


def _kept(data: PromptData, check: Callable[[PromptRecord], Any], on_bad_record: str) -> PromptData:
    """The records `check` does not raise a `BadRecordError` for; the others raise or are counted skips."""
    records = []
    for record in data.records:
        try:
            check(record)
        except BadRecordError as error:
            if on_bad_record == "error":
                raise
            data.skips.add(error)
            continue
        records.append(record)
    return PromptData(records, data.skips, data.source)


def _load_preference_prompts(
    source: Any,
    format: str | None,
    split: str | None,
    image_root: Any,
    on_bad_record: str,
    max_image_pixels: int | None,
    limit: int | None,
) -> PromptData:
    data = load_preference_data(
        source,
        format=format,
        split=split,
        image_root=image_root,
        on_bad_record=on_bad_record,
        max_image_pixels=max_image_pixels,
        limit=limit,
    )
    records = [PromptRecord(r.prompt, r.images, r.id, r.index, r.image_root) for r in data.records]
    return PromptData(records, data.skips, data.source)


def _is_preference_data(source: Any, split: str | None) -> bool:
    rows, _, description = open_rows(source, split)
    first = next((row for _, row in guarded(rows, description) if not isinstance(row, BadRecordError)), None)
    if first is None:
        return False
    try:
        detect_format(first)
        return True
    except UnknownFormatError:
        return False


def _load_prompt_rows(
    source: Any, split: str | None, image_root: Any, on_bad_record: str, max_image_pixels: int | None, limit: int | None
) -> PromptData:
    if image_root is not None and not Path(image_root).is_dir():
        raise FileNotFoundError(f"image_root {str(image_root)!r} is not a directory")
    rows, default_root, description = open_rows(source, split)
    root = str(Path(image_root if image_root is not None else default_root).resolve())
    records: list[PromptRecord] = []
    skips = SkipReport()
    for index, row in guarded(rows, description):
        if limit is not None and len(records) >= limit:
            break
        try:
            if isinstance(row, BadRecordError):
                raise row
            record = _prompt_record(row, index, root)
            for ref in record.images:
                check_image(ref, root, max_image_pixels, record=record)
        except BadRecordError as error:
            if on_bad_record == "error":
                raise
            skips.add(error)
            continue
        records.append(record)
    skips.log(description)
    return PromptData(records, skips, description)


def check_prompts(data: PromptData, sampler: Any, config: Any, on_bad_record: str = "error") -> PromptData:
    """Each prompt as the model will see it, before anything is sampled: images on a text-only model, and a
    prompt whose positions plus `max_new_tokens` exceed the model's, are bad records (named, or skipped)."""
    adapter, model = getattr(sampler, "adapter", None), getattr(sampler, "model", None)
    if adapter is None:
        return data
    text_config = getattr(getattr(model, "config", None), "get_text_config", None)
    limit = getattr(text_config(), "max_position_embeddings", None) if text_config else None

    def check(record: PromptRecord) -> None:
        if record.images and adapter.family == "causal_lm":
            raise BadRecordError(
                record, "images_for_text_model", f"{len(record.images)} image(s) for the text-only model"
            )
        positions = sampler.prompt_positions(record)
        if limit is not None and positions + config.max_new_tokens > limit:
            raise BadRecordError(
                record,
                "prompt_too_long",
                f"{positions} prompt positions + max_new_tokens {config.max_new_tokens} exceed the model's "
                f"{limit} positions",
            )

    return _kept(data, check, on_bad_record)


# ---- sample lines ------------------------------------------------------------------------------------


def image_to_json(ref: ImageRef) -> Any:
    """An image reference as a sample line stores it: a path as given, bytes / PIL images inline."""
    if isinstance(ref, Image.Image):
        buffer = io.BytesIO()
        ref.save(buffer, format="PNG")
        ref = buffer.getvalue()
    if isinstance(ref, (bytes, bytearray)):
        return {"bytes_b64": base64.b64encode(ref).decode("ascii")}
    return str(ref)


def prompt_line(record: PromptRecord) -> dict[str, Any]:
    """The prompt part of a sample line."""
    return {
        "index": record.index,
        "id": record.id,
        "prompt": record.prompt,
        "images": [image_to_json(ref) for ref in record.images],
        "meta": record.meta,
    }


def prompt_digest(record: PromptRecord) -> str:
    """The digest of what a prompt's samples depend on: its line (not its position) and its images' bytes."""
    line = {k: v for k, v in prompt_line(record).items() if k != "index"}
    images = [
        sha256_file(resolve_image_path(ref, record.image_root, record)) if isinstance(ref, str) else None
        for ref in record.images
    ]
    return sha256_json({**line, "image_sha256": images})


FLOAT32_MAX = 3.4028234663852886e38  # a score beyond it becomes inf in training's float32 tensors


def score_problem(score: Any) -> str | None:
    """What is wrong with a score, or None: a score is a finite number that float32 holds (NaN, Infinity or
    1e39 would pick wrong pairs, or drop every pair in training)."""
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
        return "not a finite number"
    if abs(score) > FLOAT32_MAX:
        return f"beyond float32's range (|score| <= {FLOAT32_MAX:.4g})"
    return None


def line_digest(line: Mapping[str, Any]) -> str:
    """The digest of a sample line's content (not its position): what its judgements depend on."""
    return sha256_json({k: v for k, v in line.items() if k != "index"})


def record_of(line: Mapping[str, Any], where: str, image_root: str | os.PathLike) -> PromptRecord:
    """The prompt record of a sample line, its images resolved in `image_root` (the reader's, never the
    line's) and checked as the data layer does: a path outside the root is refused."""
    for key in ("index", "prompt", "samples"):
        if key not in line:
            raise ValueError(f"{where}: not a sample line (no {key!r}; lines come from mm-unidpo generate)")
    if not isinstance(line["samples"], list) or not all(
        isinstance(s, dict) and isinstance(s.get("text"), str) for s in line["samples"]
    ):
        raise ValueError(f"{where}: 'samples' must be a list of objects with a string 'text'")
    root = str(Path(image_root).resolve())
    record = Prompt(
        line["prompt"], images=list(line.get("images") or []), id=line.get("id"), index=line["index"], image_root=root
    )
    try:
        validate_prompt(record)
        for ref in record.images:
            check_image(ref, root, None, record=record)
    except BadRecordError as error:
        raise ValueError(f"{where}: {error}") from None
    return PromptRecord(
        record.prompt, record.images, record.id, record.index, record.image_root, dict(line.get("meta") or {})
    )
