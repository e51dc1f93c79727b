"""The one internal preference record, and the error every bad record raises.

Every loader and format converter produces `PreferenceRecord`s; every adapter consumes them. A record
that cannot be used raises `BadRecordError`, which names the record (index and id) and the problem, so
a user can find it in their file. With `on_bad_record="skip"` the caller counts it in a `SkipReport`.
"""

from __future__ import annotations

import base64
import binascii
import collections
import logging
import math
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Protocol

from PIL import Image

logger = logging.getLogger(__name__)

# An image as a record may carry it: a path (relative to the dataset's image_root, or absolute inside
# it), raw encoded bytes, or an already opened PIL image.
ImageRef = str | bytes | Image.Image
# A chat message: {"role": "user", "content": "text with <image>"} or content as a list of parts
# [{"type": "image"}, {"type": "text", "text": "..."}].
Message = dict[str, Any]

IMAGE_PLACEHOLDER = "<image>"


class PromptFields(Protocol):
    """What encoding a prompt reads: the prompt with its images (and, for messages, the id and index).
    `Prompt`, `PreferenceRecord` and the on-policy `PromptRecord` all have these."""

    prompt: str | list[Message]
    images: list[ImageRef]
    id: str | None
    index: int | None
    image_root: str | None

    def where(self) -> str: ...


@dataclass
class Prompt:
    """A prompt alone: text with <image> placeholders or chat messages, and its images (evaluation,
    sampling and judging condition on these without any response pair)."""

    prompt: str | list[Message]
    images: list[ImageRef] = field(default_factory=list)
    id: str | None = None
    index: int | None = None
    image_root: str | None = None

    def where(self) -> str:
        return f"record {self.index if self.index is not None else '?'} (id={self.id!r})"


@dataclass
class PreferenceRecord:
    """One preference pair: a prompt (with images), a preferred and a dispreferred response.

    `rejected_images` (image-contrast pairs: POVID, SymMPO, ms-swift's column): the rejected response is
    scored with these images in the prompt's slots instead of `images` (one per slot); None: `images`.
    """

    prompt: str | list[Message]
    chosen: str
    rejected: str
    images: list[ImageRef] = field(default_factory=list)
    score_chosen: float | None = None
    score_rejected: float | None = None
    id: str | None = None
    index: int | None = None  # position in the source file, for error messages
    image_root: str | None = None  # where relative image paths are resolved
    rejected_images: list[ImageRef] | None = None

    def where(self) -> str:
        """How error messages name this record."""
        return f"record {self.index if self.index is not None else '?'} (id={self.id!r})"


class BadRecordError(ValueError):
    """A record that cannot be trained on. `reason` is a short, stable key used for skip counts."""

    def __init__(
        self,
        record: PromptFields | None,
        reason: str,
        detail: str,
        index: int | None = None,
        record_id: str | None = None,
    ):
        self.reason = reason
        self.index = record.index if record is not None else index
        self.record_id = record.id if record is not None else record_id
        self.detail = detail
        where = f"record {self.index if self.index is not None else '?'} (id={self.record_id!r})"
        super().__init__(f"{where}: {reason}: {detail}")


class SkipReport:
    """Counts records skipped under `on_bad_record="skip"`, by reason, and logs a summary.

    A record is counted once however often it is met (every epoch, the reference pass, ...): `add`
    takes a key for the record (default: its index and id) and ignores a key it has seen.
    """

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self.examples: dict[str, str] = {}
        self._seen: set[Any] = set()

    def add(self, error: BadRecordError, key: Any = None) -> bool:
        """Count `error`'s record; False (and nothing counted) if this record was counted before."""
        if key is None and (error.index is not None or error.record_id is not None):
            key = (error.index, error.record_id)
        if key is not None:
            if key in self._seen:
                return False
            self._seen.add(key)
        self.counts[error.reason] += 1
        self.examples.setdefault(error.reason, str(error))
        return True

    def merged(self, *others: SkipReport) -> SkipReport:
        """One report of the skips of this and `others` (distinct stages that never see the same record)."""
        out = SkipReport()
        for report in (self, *others):
            out.counts.update(report.counts)
            for reason, example in report.examples.items():
                out.examples.setdefault(reason, example)
        return out

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        if not self.counts:
            return "no records skipped"
        parts = ", ".join(f"{reason}: {n}" for reason, n in sorted(self.counts.items()))
        return f"skipped {self.total} bad records ({parts})"

    def log(self, what: str = "data") -> None:
        if self.counts:
            logger.warning("%s: %s; first of each: %s", what, self.summary(), self.examples)


# Stable `BadRecordError.reason` keys. `prompt_too_long`, `template_mismatch`, `images_for_text_model`
# and `encode_failed` come from the model adapters at tokenization time (the pre-flight pass meets them
# before training); `invalid_json` is a JSON-lines line that does not parse (or is not an object);
# `malformed_record` a row a converter cannot read (a field of the wrong type); `mismatched_prompts` a
# pair whose two conversations ask different questions.
BAD_RECORD_REASONS = (
    "missing_field",
    "invalid_json",
    "malformed_record",
    "bad_prompt",
    "placeholder_mismatch",
    "empty_response",
    "non_string_response",
    "identical_responses",
    "mismatched_prompts",
    "bad_score",
    "missing_image",
    "corrupt_image",
    "image_outside_root",
    "image_too_large",
    "no_preference",
    "prompt_too_long",
    "template_mismatch",
    "images_for_text_model",
    "encode_failed",
)
# Scores are float32 tensors in the loss: a larger magnitude would become inf there.
FLOAT32_MAX = 3.4028234663852886e38


def as_image_ref(value: Any, record: PromptFields | None = None) -> ImageRef:
    """Normalize one image value as sources carry it into an `ImageRef`.

    Accepts a path string, raw bytes, a PIL image, a `datasets` image dict {"bytes": ..., "path": ...}
    (bytes win: the path of an embedded image is informational), or our saved form {"bytes_b64": ...}.
    """
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        if not value.strip():
            raise BadRecordError(record, "missing_image", "empty image path")
        return value
    if isinstance(value, dict):
        if value.get("bytes_b64") is not None:
            try:
                return base64.b64decode(value["bytes_b64"], validate=True)
            except (binascii.Error, TypeError, ValueError) as e:
                raise BadRecordError(record, "corrupt_image", f"invalid base64 image: {e}") from None
        if value.get("bytes") is not None:
            return as_image_ref(value["bytes"], record)
        if value.get("path") is not None:
            return as_image_ref(value["path"], record)
        raise BadRecordError(record, "missing_image", f"image entry has neither bytes nor path: {sorted(value)}")
    raise BadRecordError(record, "missing_image", f"unsupported image value of type {type(value).__name__}")


def _iter_texts(prompt: str | list[Message]) -> list[str]:
    if isinstance(prompt, str):
        return [prompt]
    texts = []
    for message in prompt:
        content = message["content"]
        if isinstance(content, str):
            texts.append(content)
        else:
            texts.extend(part["text"] for part in content if part.get("type") == "text")
    return texts


def count_placeholders(prompt: str | list[Message]) -> int:
    """Image slots in a prompt: `<image>` in any text plus {"type": "image"} parts of chat messages."""
    n = sum(text.count(IMAGE_PLACEHOLDER) for text in _iter_texts(prompt))
    if not isinstance(prompt, str):
        n += sum(
            1
            for m in prompt
            if not isinstance(m["content"], str)
            for part in m["content"]
            if part.get("type") == "image"
        )
    return n


def add_image_placeholders(prompt: str | list[Message], n: int) -> str | list[Message]:
    """Prepend `n` image slots (LLaVA convention: images come first, one `<image>` line each).

    Text prompts get "<image>\\n" * n in front; chat prompts get n {"type": "image"} parts at the start of
    the first user message (the first message if none is "user"). Returns a new prompt; the input is
    not modified (it may be a row of the source dataset).
    """
    if n <= 0:
        return prompt
    if isinstance(prompt, str):
        return (IMAGE_PLACEHOLDER + "\n") * n + prompt
    messages = [dict(m) for m in prompt]
    target = next((m for m in messages if m.get("role") == "user"), messages[0])
    content = target["content"]
    parts = [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
    target["content"] = [{"type": "image"} for _ in range(n)] + parts
    return messages


def message_text(messages: list[Message], role: str | None = "assistant") -> str | None:
    """The text of the messages with `role` (all messages if None), joined by newlines; None if none match."""
    texts = [_iter_texts([m]) for m in messages if role is None or m.get("role") == role]
    return "\n".join("".join(t) for t in texts) if texts else None


def _check_messages(record: PromptFields, messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise BadRecordError(record, "bad_prompt", "a chat prompt must be a non-empty list of messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or "content" not in m:
            raise BadRecordError(record, "bad_prompt", f"message {i} needs a string 'role' and a 'content'")
        content = m["content"]
        if isinstance(content, str):
            continue
        if not isinstance(content, list):
            raise BadRecordError(record, "bad_prompt", f"message {i}: content must be a string or a list of parts")
        for part in content:
            ok = isinstance(part, dict) and (
                part.get("type") == "image" or (part.get("type") == "text" and isinstance(part.get("text"), str))
            )
            if not ok:
                raise BadRecordError(record, "bad_prompt", f"message {i}: unsupported content part {part!r:.80}")


def _score(record: PreferenceRecord, name: str, value: Any) -> float:
    # bool is an int subclass but never a meaningful score; numeric strings are common in JSON exports.
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise BadRecordError(record, "bad_score", f"{name} is not a number: {value!r:.40}")
    try:
        score = float(value)
    except ValueError:
        raise BadRecordError(record, "bad_score", f"{name} is not a number: {value!r:.40}") from None
    if not math.isfinite(score):
        raise BadRecordError(record, "bad_score", f"{name} is {score}")
    if abs(score) > FLOAT32_MAX:
        raise BadRecordError(
            record,
            "bad_score",
            f"{name} is {score:g}, beyond float32 (|score| <= 3.4e38), where the loss computes with it",
        )
    return score


def is_blank(text: str) -> bool:
    """No visible character: only whitespace, control (NUL included) and format characters (zero-width)."""
    return all(c.isspace() or unicodedata.category(c) in ("Cc", "Cf", "Zs", "Zl", "Zp") for c in text)


def validate_record(record: PreferenceRecord) -> PreferenceRecord:
    """Check a record's text, scores and image count, and normalize it in place; returns it.

    Normalizing means: images become `ImageRef`s, scores become floats, and a prompt without any image
    placeholder gets one per image prepended (`add_image_placeholders`). Image files themselves are
    checked by `images.check_image`. Raises `BadRecordError` with a stable reason.
    """
    _check_prompt_shape(record)
    for name in ("chosen", "rejected"):
        value = getattr(record, name)
        if not isinstance(value, str):
            raise BadRecordError(record, "non_string_response", f"{name} is not a string (got {type(value).__name__})")
        if is_blank(value):
            what = "empty" if not value.strip() else "empty (only control or invisible characters)"
            raise BadRecordError(record, "empty_response", f"{name} is {what}")
    if record.chosen.strip() == record.rejected.strip():
        raise BadRecordError(record, "identical_responses", "chosen and rejected are the same text")

    if (record.score_chosen is None) != (record.score_rejected is None):
        raise BadRecordError(record, "bad_score", "only one of score_chosen / score_rejected is given")
    if record.score_chosen is not None:
        record.score_chosen = _score(record, "score_chosen", record.score_chosen)
        record.score_rejected = _score(record, "score_rejected", record.score_rejected)
    _normalize_images(record)
    if record.rejected_images is not None:
        rejected: Any = record.rejected_images
        rejected = list(rejected) if isinstance(rejected, (list, tuple)) else [rejected]
        record.rejected_images = [as_image_ref(image, record) for image in rejected]
        if len(record.rejected_images) != len(record.images):
            raise BadRecordError(
                record,
                "placeholder_mismatch",
                f"rejected_images has {len(record.rejected_images)} image(s) but the prompt has "
                f"{len(record.images)} image slot(s): one rejected image per slot",
            )
    return record


def validate_prompt(prompt: PromptFields) -> PromptFields:
    """`validate_record`'s checks and normalization of the prompt and its images, for a prompt alone."""
    _check_prompt_shape(prompt)
    _normalize_images(prompt)
    return prompt


def _check_prompt_shape(record: PromptFields) -> None:
    if isinstance(record.prompt, list):
        _check_messages(record, record.prompt)
    elif not isinstance(record.prompt, str):
        raise BadRecordError(
            record, "bad_prompt", f"prompt must be text or a list of chat messages, got {type(record.prompt).__name__}"
        )


def _normalize_images(record: PromptFields) -> None:
    images: Any = record.images
    if images is None:
        images = []
    elif not isinstance(images, (list, tuple)):
        images = [images]
    record.images = [as_image_ref(image, record) for image in images]
    n = count_placeholders(record.prompt)
    if n == 0 and record.images:
        record.prompt = add_image_placeholders(record.prompt, len(record.images))
    elif n != len(record.images):
        raise BadRecordError(
            record,
            "placeholder_mismatch",
            f"prompt has {n} image placeholder(s) but the record has {len(record.images)} image(s)",
        )
