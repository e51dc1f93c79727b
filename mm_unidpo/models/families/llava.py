"""transformers' LLaVA classes: LLaVA-1.5 (`llava`), LLaVA-NeXT (`llava_next`, anyres tiles with
`image_sizes`) and LLaVA-OneVision (`llava_onevision`). The processor expands each `<image>` into the
exact number of image tokens the model consumes; the prompt is never truncated, so they always match."""

from __future__ import annotations

from typing import Any

import torch

from .base import Family, FamilySpec


class Llava(Family):
    spec = FamilySpec("llava", model_types=("llava",))


class LlavaNext(Family):
    """Each image is a variable number of tiles: pad the tile dimension across blocks. The model reads
    the true tile count of every image from `image_sizes` and drops the padding."""

    spec = FamilySpec("llava_next", model_types=("llava_next",))

    def stack_vision(self, per_block: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        tiles = [v["pixel_values"] for v in per_block if "pixel_values" in v]
        if not tiles:
            return {}
        most = max(t.shape[1] for t in tiles)
        out = {
            "pixel_values": torch.cat(
                [torch.nn.functional.pad(t, (0, 0, 0, 0, 0, 0, 0, most - t.shape[1])) for t in tiles]
            )
        }
        # image_sizes (one row per image) and batch_num_images (one entry per sequence) follow the blocks.
        for key in ("image_sizes", "batch_num_images"):
            parts = [v[key] for v in per_block if key in v]
            if parts:
                out[key] = torch.cat(parts)
        return out


class LlavaOnevision(LlavaNext):
    """A text with one image gets the anyres layout (base + tiles); a text with several images gets the
    base view of each. The processor tells them apart only from images nested per text, as transformers'
    ``apply_chat_template`` passes them: flat, two images of one prompt read as two one-image prompts."""

    spec = FamilySpec("llava_onevision", model_types=("llava_onevision",))

    def processor_images(self, rows: list[list[Any]]) -> list[Any]:
        return [list(row) for row in rows]
