"""Prompts and preference records -> token ids and vision tensors, through a family's hooks.

    encode_prompt(family, prompt, max_image_pixels=...)       -> EncodedPrompt
    encode_pair(family, record, max_length=..., ...)          -> EncodedPair

The prompt is rendered with the model's own chat template; a response is what the template writes for
an assistant turn, up to and including its end-of-turn token. Truncation cuts responses from their end
and never the prompt (which holds the image tokens): `EncodedPair.truncated` says whether it happened.
A record that cannot be encoded raises `BadRecordError` naming it; nothing is counted here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from mm_unidpo.data.images import load_record_images
from mm_unidpo.data.records import BadRecordError, ImageRef, Message, PreferenceRecord, Prompt, PromptFields

from .families.base import Family


@dataclass
class EncodedPrompt:
    """A rendered, tokenized prompt: ids (image tokens expanded where the processor expands them)."""

    text: str
    ids: list[int]
    vision: dict[str, torch.Tensor]  # processor outputs for its images (per image, dim 0)
    token_extras: dict[str, list[int]]  # per-prompt-token side inputs (e.g. mm_token_type_ids)
    positions: int  # positions it takes in the language model (LLaVA-orig: image features spliced in)
    messages: list[Message]


@dataclass
class OtherPrompt:
    """The record's prompt with other images, the response(s) scored under it: the rejected one with
    the record's `rejected_images`, or the chosen one with the contrast image (losses/image.py)."""

    ids: list[int]
    vision: dict[str, torch.Tensor]
    token_extras: dict[str, list[int]]
    positions: int


@dataclass
class EncodedPair:
    """One record tokenized: the shared prompt (image tokens expanded) and both responses; with
    `rejected_prompt` the rejected response is scored after it instead, and with `contrast_prompt` the
    chosen response is scored after it once more."""

    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    vision: dict[str, torch.Tensor]
    token_extras: dict[str, list[int]]
    truncated: bool
    record: PreferenceRecord
    prompt_positions: int = -1  # -1: len(prompt_ids)
    rejected_prompt: OtherPrompt | None = None
    contrast_prompt: OtherPrompt | None = None

    @property
    def packed_length(self) -> int:
        """The positions a pair takes in a packed row: each prompt once, its responses."""
        p = self.prompt_positions if self.prompt_positions >= 0 else len(self.prompt_ids)
        extra = sum(o.positions for o in (self.rejected_prompt, self.contrast_prompt) if o is not None)
        contrast = len(self.chosen_ids) if self.contrast_prompt is not None else 0
        return p + len(self.chosen_ids) + len(self.rejected_ids) + extra + contrast


def render_prompt(family: Family, prompt: PromptFields) -> tuple[list[Message], str]:
    messages = family.messages(prompt.prompt, prompt)
    return messages, family.render(messages, None)


def response_text(family: Family, messages: list[Message], prompt_text: str, response: str, record: Any) -> str:
    """The text the template writes for `response` as the assistant's turn (after the prompt)."""
    full = family.render(messages, response)
    if not full.startswith(prompt_text):
        raise BadRecordError(
            record,
            "template_mismatch",
            "the chat template renders the prompt differently with and without a response; "
            "cannot separate response tokens",
        )
    # Anything a template writes after the end-of-turn token (e.g. "\n") is not part of the response.
    return full[len(prompt_text) :].rstrip()


def encode_prompt(family: Family, prompt: PromptFields, *, max_image_pixels: int | None = None) -> EncodedPrompt:
    """Render and tokenize a prompt with its images; a processor's complaint (image tokens in the text that
    do not match the images, ...) becomes the record's `BadRecordError`."""
    messages, text = render_prompt(family, prompt)
    images = load_record_images(prompt, max_pixels=max_image_pixels) if prompt.images else []
    try:
        ids, vision, extras = family.tokenize_prompt(text, images, prompt)
    except BadRecordError:
        raise
    except ValueError as error:  # transformers processors check placeholders against the images given
        reason = "placeholder_mismatch" if "token" in str(error) else "encode_failed"
        raise BadRecordError(prompt, reason, f"the processor refuses the prompt: {error}") from None
    except (TypeError, RuntimeError, IndexError, KeyError) as error:
        raise BadRecordError(
            prompt, "encode_failed", f"the processor fails on this record: {type(error).__name__}: {error}"
        ) from None
    return EncodedPrompt(text, ids, vision, extras, family.prompt_positions(ids), messages)


def _with_images(record: PreferenceRecord, images: list[ImageRef] | list[Image.Image]) -> Prompt:
    return Prompt(record.prompt, list(images), record.id, record.index, record.image_root)


def encode_pair(
    family: Family,
    record: PreferenceRecord,
    *,
    max_length: int,
    max_image_pixels: int | None = None,
    contrast: list[Image.Image] | None = None,
) -> EncodedPair:
    """`contrast`: the images the chosen response is also scored with (the image-side terms' view)."""
    messages, prompt_text = render_prompt(family, record)
    texts = {
        name: response_text(family, messages, prompt_text, getattr(record, name), record)
        for name in ("chosen", "rejected")
    }
    for name in texts:
        family.check_response(name, getattr(record, name), record)
    prompt = encode_prompt(family, record, max_image_pixels=max_image_pixels)
    others = {
        name: encode_prompt(family, _with_images(record, images), max_image_pixels=max_image_pixels)
        for name, images in (("rejected", record.rejected_images), ("contrast", contrast))
        if images is not None
    }
    # One cut for every prompt, so the chosen response scored under the contrast image is the same tokens.
    room = max_length - max(p.positions for p in (prompt, *others.values()))
    if room < 1:
        raise BadRecordError(
            record,
            "prompt_too_long",
            f"the prompt takes {prompt.positions} tokens ({family.what_counts(prompt.ids)}) and max_length is "
            f"{max_length}: no response token fits",
        )
    ids = {
        name: family.response_ids(prompt_text, prompt.ids, text, getattr(record, name), record)
        for name, text in texts.items()
    }
    for name, response in ids.items():
        if family.media_token_ids.intersection(response):
            raise BadRecordError(
                record,
                "placeholder_mismatch",
                f"the {name} response contains the model's image/video token, which the model "
                f"would take for an image slot",
            )
    truncated = any(len(response) > room for response in ids.values())
    other = {name: OtherPrompt(p.ids, p.vision, p.token_extras, p.positions) for name, p in others.items()}
    return EncodedPair(
        prompt.ids,
        ids["chosen"][:room],
        ids["rejected"][:room],
        prompt.vision,
        prompt.token_extras,
        truncated,
        record,
        prompt.positions,
        other.get("rejected"),
        other.get("contrast"),
    )
