"""Gemma-3 (`gemma3`): Gemma3ForConditionalGeneration with Gemma3Processor.

The template writes ``<start_of_image>`` per image; the processor expands it into
``\\n\\n<start_of_image>`` + ``mm_tokens_per_image`` × ``<image_soft_token>`` + ``<end_of_image>\\n\\n`` and
returns per-token ``token_type_ids`` (1 on image tokens), which the model turns into bidirectional
attention among each image's tokens (without them every image token would attend causally: a
different model). They are padded with the tokens and passed to every forward.

Plain layout only: the bidirectional image blocks and the sliding-window layers (a rejected response
after a chosen one would see its prompt through a window shifted by the chosen span) are not the
per-pair causal attention of the packed layout, and varlen kernels take no block mask either.
"""

from __future__ import annotations

from typing import Any

from .base import Family, FamilySpec


class Gemma3(Family):
    spec = FamilySpec("gemma3", model_types=("gemma3",), layouts=("plain",), token_extra_keys=("token_type_ids",))

    def __init__(self, model: Any, processor: Any, **options: Any):
        super().__init__(model, processor, **options)
        # The template's image placeholder (<start_of_image>) in a response would be taken for an image
        # slot by the processor's rendering of the conversation: refuse it like the soft image token.
        boi = getattr(getattr(model, "config", None), "boi_token_index", None)
        if isinstance(boi, int):
            self.media_token_ids.add(boi)

    def processor_images(self, rows: list[list[Any]]) -> list[Any]:
        """One list of images per text: the processor reads a flat list as the images of one text."""
        return [list(row) for row in rows]
