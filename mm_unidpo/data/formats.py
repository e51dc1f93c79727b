"""Converters from public preference-data schemas to `PreferenceRecord`.

A converter takes one source row (a dict) and its index and returns a `PreferenceRecord`, or raises
`BadRecordError` (reasons `missing_field`, `no_preference`, ...). Converters only map fields; the
common checks (responses, scores, placeholders) run afterwards in `records.validate_record`.

Adding a format is one function and one decorator line:

    @register_format("myformat", signature="question, good, bad",
                     detect=lambda row: {"question", "good", "bad"} <= row.keys())
    def convert_myformat(row, index): ...

`detect_format` tries the formats in registration order, so specific schemas are registered before
general ones (e.g. `trl` before `unidpo`, which both have prompt/chosen/rejected).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from .records import BadRecordError, Message, PreferenceRecord, message_text

Row = Mapping[str, Any]
Converter = Callable[[Row, int], PreferenceRecord]

# The registry: format name -> converter. Detection predicates and the human-readable key signature
# used in error messages live beside it, keyed the same way.
FORMATS: dict[str, Converter] = {}
_DETECT: dict[str, Callable[[Row], bool]] = {}
_SIGNATURES: dict[str, str] = {}


class UnknownFormatError(ValueError):
    """The format name is not registered, or no registered format matches the data's keys."""


def register_format(name: str, *, signature: str, detect: Callable[[Row], bool]) -> Callable[[Converter], Converter]:
    """Register a converter under `name`; `detect(first_row)` says whether data is in this format."""

    def decorator(fn: Converter) -> Converter:
        FORMATS[name] = fn
        _DETECT[name] = detect
        _SIGNATURES[name] = signature
        return fn

    return decorator


def known_formats() -> str:
    """The registered formats and their keys, for error messages."""
    return "; ".join(f"{name} ({_SIGNATURES[name]})" for name in FORMATS)


def get_converter(name: str) -> Converter:
    """The converter registered under `name`, or `UnknownFormatError` listing the known formats."""
    try:
        return FORMATS[name]
    except KeyError:
        raise UnknownFormatError(f"unknown preference data format {name!r}; known formats: {known_formats()}") from None


def detect_format(row: Row) -> str:
    """The name of the first registered format whose keys match `row` (the dataset's first record)."""
    if isinstance(row, Mapping):
        for name, detect in _DETECT.items():
            if detect(row):
                return name
        keys = sorted(row.keys())
    else:
        keys = f"<not an object: {type(row).__name__}>"
    raise UnknownFormatError(
        f"cannot detect the preference data format from the first record's keys {keys}; "
        f"known formats: {known_formats()}. Pass format=<name> to choose one."
    )


# --- helpers -------------------------------------------------------------------------------------


def _record_id(row: Row) -> str | None:
    for key in ("id", "idx"):
        if row.get(key) is not None:
            return str(row[key])
    return None


def _bad(index: int, record_id: str | None, reason: str, detail: str) -> BadRecordError:
    return BadRecordError(None, reason, detail, index=index, record_id=record_id)


def _first(row: Row, keys: tuple[str, ...], index: int, record_id: str | None) -> Any:
    """The value of the first of `keys` present in `row` (missing_field if none is)."""
    for key in keys:
        if key in row and row[key] is not None:
            return row[key]
    for key in keys:  # present but null: let validation report the value itself
        if key in row:
            return row[key]
    raise _bad(
        index, record_id, "missing_field", f"needs one of the fields {', '.join(keys)}; the row has {_keys(row)}"
    )


def _require(row: Row, keys: tuple[str, ...], index: int, record_id: str | None) -> None:
    missing = [key for key in keys if key not in row]
    if missing:
        raise _bad(
            index, record_id, "missing_field", f"missing field(s) {', '.join(missing)}; the row has {_keys(row)}"
        )


def _keys(row: Row) -> str:
    keys = sorted(map(str, row.keys()))
    return str(keys[:12])[:-1] + (", ...]" if len(keys) > 12 else "]")


def _images(row: Row, keys: tuple[str, ...] = ("images", "image")) -> list[Any]:
    """The raw image values under the first present key, as a list (normalized in validation)."""
    for key in keys:
        value = row.get(key)
        if value is not None:
            return list(value) if isinstance(value, (list, tuple)) else [value]
    return []


def _rejected_images(row: Row) -> list[Any] | None:
    """`rejected_images` as given (None when absent or null: the rejected response sees the prompt's)."""
    value = row.get("rejected_images")
    if value is None:
        return None
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _response(value: Any, name: str, index: int, record_id: str | None) -> Any:
    """A response given as text, or as a message list (TRL conversational): its assistant text."""
    if isinstance(value, list):
        if not all(isinstance(m, dict) and "content" in m for m in value):
            raise _bad(index, record_id, "non_string_response", f"{name} is a list but not of chat messages")
        text = message_text(value, "assistant")
        if text is None:
            raise _bad(index, record_id, "non_string_response", f"{name} has no assistant message")
        return text
    return value  # a string, or something validation reports as non_string_response


def _has(row: Row, *keys: str) -> bool:
    return all(key in row for key in keys)


# --- formats, in detection order -----------------------------------------------------------------

_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def _llava_turns(value: Any, name: str, index: int, record_id: str | None) -> list[Message]:
    if not isinstance(value, list) or not value:
        raise _bad(index, record_id, "missing_field", f"{name} must be a non-empty list of turns")
    turns = []
    for turn in value:
        if not isinstance(turn, dict):
            raise _bad(index, record_id, "missing_field", f"{name} has a turn that is not an object")
        speaker = turn.get("from", turn.get("role"))
        if not isinstance(speaker, str) or speaker not in _ROLES:
            raise _bad(index, record_id, "missing_field", f"{name} has a turn from unknown speaker {speaker!r}")
        turns.append({"role": _ROLES[speaker], "content": turn.get("value", turn.get("content"))})
    if turns[-1]["role"] != "assistant":
        raise _bad(index, record_id, "missing_field", f"{name} does not end with a gpt turn")
    return turns


@register_format(
    "povid",
    signature="conversations, rejected_conversations, image",
    detect=lambda row: _has(row, "conversations", "rejected_conversations"),
)
def convert_povid(row: Row, index: int) -> PreferenceRecord:
    """POVID: LLaVA-style `conversations` / `rejected_conversations` ({"from": "human"|"gpt", "value"}).

    The final gpt turn of each is the chosen / rejected response. The turns before it (taken from
    `conversations`) are the prompt: the human text when there is a single human turn, else a chat
    message list.
    """
    rid = _record_id(row)
    _require(row, ("conversations", "rejected_conversations"), index, rid)
    chosen_turns = _llava_turns(row["conversations"], "conversations", index, rid)
    rejected_turns = _llava_turns(row["rejected_conversations"], "rejected_conversations", index, rid)
    context = chosen_turns[:-1]
    if not context:
        raise _bad(index, rid, "missing_field", "conversations has no human turn before the gpt turn")
    # The rejected conversation may repeat the question (POVID's files do) or hold the answer only; if it
    # repeats it, it must be the same question, or the pair compares answers to two different prompts.
    if len(rejected_turns) > 1 and _turn_texts(rejected_turns[:-1]) != _turn_texts(context):
        raise _bad(
            index,
            rid,
            "mismatched_prompts",
            "rejected_conversations asks a different question from "
            "conversations (the turns before the last gpt turn differ)",
        )
    prompt: Any = context[0]["content"] if len(context) == 1 and context[0]["role"] == "user" else context
    return PreferenceRecord(
        prompt=prompt,
        chosen=chosen_turns[-1]["content"],
        rejected=rejected_turns[-1]["content"],
        images=_images(row),
        id=rid,
        index=index,
    )


@register_format(
    "swift",
    signature="messages ending with the chosen assistant turn, rejected_response, images, rejected_images",
    detect=lambda row: _has(row, "messages", "rejected_response"),
)
def convert_swift(row: Row, index: int) -> PreferenceRecord:
    """ms-swift's DPO rows: `messages` (system / user / assistant turns, `<image>` tags in the text)
    ending with the chosen assistant turn, `rejected_response`, `images` and optional `rejected_images`.

    The turns before the last are the prompt: the user text when there is a single user turn, else a
    chat message list (a system turn included).
    """
    rid = _record_id(row)
    messages = row["messages"]
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise _bad(index, rid, "missing_field", "messages must be a non-empty list of {role, content} turns")
    if messages[-1].get("role") != "assistant":
        raise _bad(index, rid, "missing_field", "messages must end with the chosen assistant turn")
    context = [dict(m) for m in messages[:-1]]
    if not context or context[-1].get("role") != "user":
        raise _bad(index, rid, "missing_field", "messages has no user turn before the chosen assistant turn")
    single = len(context) == 1 and isinstance(context[0].get("content"), str)
    return PreferenceRecord(
        prompt=context[0]["content"] if single else context,
        chosen=messages[-1].get("content"),
        rejected=_response(row["rejected_response"], "rejected_response", index, rid),
        images=_images(row),
        id=rid,
        index=index,
        rejected_images=_rejected_images(row),
    )


def _turn_texts(turns: list[Message]) -> list[tuple[str, Any]]:
    return [(t["role"], t["content"].strip() if isinstance(t["content"], str) else t["content"]) for t in turns]


def _rating(value: Any) -> float | None:
    """A numeric rating from 4, "4", or {"Rating": "4", ...}; None when absent or not a number ("N/A")."""
    if isinstance(value, dict):
        value = value.get("Rating", value.get("rating"))
    if isinstance(value, bool) or value is None:
        return None
    try:
        rating = float(value)
    except (TypeError, ValueError):
        return None
    return rating if math.isfinite(rating) else None


@register_format(
    "vlfeedback", signature="instruction or prompt, completions, image", detect=lambda row: "completions" in row
)
def convert_vlfeedback(row: Row, index: int) -> PreferenceRecord:
    """VLFeedback: several rated `completions`; the pair is highest vs lowest mean rating.

    Each completion is {"response", "model", "annotations": {aspect: {"Rating": "4", ...} or 4}}; its
    score is the mean of its numeric aspect ratings (unrated aspects such as "N/A" are ignored). Ties
    take the first completion. If fewer than two completions are rated or all ratings tie, there is no
    preference: `no_preference`.
    """
    rid = _record_id(row)
    prompt = _first(row, ("instruction", "prompt"), index, rid)
    _require(row, ("completions",), index, rid)
    completions = row["completions"]
    if not isinstance(completions, list):
        raise _bad(index, rid, "missing_field", "completions must be a list")
    rated: list[tuple[float, Any]] = []
    for completion in completions:
        if not isinstance(completion, dict):
            raise _bad(index, rid, "missing_field", "completions must be a list of objects")
        annotations = completion.get("annotations") or {}
        if not isinstance(annotations, dict):
            continue
        ratings = [r for r in map(_rating, annotations.values()) if r is not None]
        if ratings:
            rated.append((sum(ratings) / len(ratings), completion.get("response")))
    if len(rated) < 2:
        raise _bad(
            index,
            rid,
            "no_preference",
            f"{len(rated)} of {len(completions)} completions are rated; need two to form a pair",
        )
    best = max(rated, key=lambda c: c[0])
    worst = min(rated, key=lambda c: c[0])
    if best[0] == worst[0]:
        raise _bad(index, rid, "no_preference", f"all {len(rated)} rated completions tie at mean rating {best[0]:g}")
    return PreferenceRecord(
        prompt=prompt,
        chosen=best[1],
        rejected=worst[1],
        images=_images(row),
        score_chosen=best[0],
        score_rejected=worst[0],
        id=rid,
        index=index,
    )


@register_format(
    "rlaif_v",
    signature="question, chosen, rejected, image, optional idx/ds_name",
    detect=lambda row: _has(row, "question", "chosen", "rejected"),
)
def convert_rlaif_v(row: Row, index: int) -> PreferenceRecord:
    """RLAIF-V: `question`, `chosen`, `rejected`, one `image` ({"bytes", "path"} or a PIL image).

    Every RLAIF-V pair is about its image: a row without one (missing or null) is `missing_image`, not a
    text-only pair.
    """
    rid = _record_id(row)
    _require(row, ("question", "chosen", "rejected"), index, rid)
    images = _images(row, ("image", "images"))
    if not images or any(image is None for image in images):
        raise _bad(index, rid, "missing_image", "an rlaif_v row needs its image (the 'image' field is missing or null)")
    return PreferenceRecord(
        prompt=row["question"],
        chosen=_response(row["chosen"], "chosen", index, rid),
        rejected=_response(row["rejected"], "rejected", index, rid),
        images=images,
        id=rid,
        index=index,
    )


def _is_trl(row: Row) -> bool:
    return _has(row, "prompt", "chosen", "rejected") and any(
        isinstance(row[key], list) for key in ("prompt", "chosen", "rejected")
    )


@register_format(
    "trl", signature="prompt, chosen, rejected as chat message lists, images, rejected_images", detect=_is_trl
)
def convert_trl(row: Row, index: int) -> PreferenceRecord:
    """TRL conversational preference data: message lists; chosen/rejected become their assistant text.

    The prompt stays a message list (content a string or parts {"type": "image"} / {"type": "text"}).
    """
    rid = _record_id(row)
    _require(row, ("prompt", "chosen", "rejected"), index, rid)
    return PreferenceRecord(
        prompt=row["prompt"],
        chosen=_response(row["chosen"], "chosen", index, rid),
        rejected=_response(row["rejected"], "rejected", index, rid),
        images=_images(row),
        id=rid,
        index=index,
        rejected_images=_rejected_images(row),
    )


@register_format(
    "unidpo",
    signature="instruction or prompt, chosen, rejected, optional score_chosen/score_rejected, images or image, "
    "rejected_images, id",
    detect=lambda row: _has(row, "chosen", "rejected") and ("instruction" in row or "prompt" in row),
)
def convert_unidpo(row: Row, index: int) -> PreferenceRecord:
    """Our own format (also the Uni-DPO release): text or chat prompt, text responses, optional scores.

    Images are paths (relative to the image root), {"bytes_b64": ...} as `save_preference_data` writes,
    or `datasets` image dicts; optional `rejected_images` are the rejected response's (records.py).
    """
    rid = _record_id(row)
    prompt = _first(row, ("instruction", "prompt"), index, rid)
    _require(row, ("chosen", "rejected"), index, rid)
    return PreferenceRecord(
        prompt=prompt,
        chosen=_response(row["chosen"], "chosen", index, rid),
        rejected=_response(row["rejected"], "rejected", index, rid),
        images=_images(row),
        score_chosen=row.get("score_chosen"),
        score_rejected=row.get("score_rejected"),
        id=rid,
        index=index,
        rejected_images=_rejected_images(row),
    )
