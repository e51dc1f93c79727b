"""Qwen-VL: Qwen2-VL, Qwen2.5-VL and Qwen3-VL.

The processor turns each image into a variable number of patches (`pixel_values` flattened over all
images, `image_grid_thw` one row per image) and expands `<|image_pad|>` to match. Positions are 3-D
M-RoPE indices (passing 1-D ones would silently drop M-RoPE): each prompt gets the model's own rope
index and every response continues from it, as the model computes for the whole sequence. Per-token
`mm_token_type_ids`, where the processor returns them, are padded with the tokens. No varlen layout: its
kernels take 1-D positions only.
"""

from __future__ import annotations

from typing import Any

import torch

from ..layouts.blocks import Blocks, PairBatch
from ..utils import unwrap_model
from .base import Family, FamilySpec

_QWEN_VL = dict(
    vision_modules=("visual",),
    projector_modules=("merger",),
    layouts=("plain", "packed"),
    token_extra_keys=("mm_token_type_ids", "token_type_ids"),
)


class Qwen2VL(Family):
    spec = FamilySpec("qwen2_vl", model_types=("qwen2_vl",), **_QWEN_VL)  # type: ignore[arg-type]

    def position_ids(self, model: Any, batch: PairBatch, blocks: Blocks) -> torch.Tensor | None:
        """3-D M-RoPE positions: the model's own rope index for each prompt (images included), then every
        response continues from the prompt's next position, as text (t = h = w) — what the model computes
        for each sequence alone."""
        prompt_ids, prompt_mask, extras = batch.prompts()
        extras = {k: v for k, v in extras.items() if k == "mm_token_type_ids"}
        prompt_positions, _ = unwrap_model(model).model.get_rope_index(
            prompt_ids, image_grid_thw=batch.vision.get("image_grid_thw"), attention_mask=prompt_mask, **extras
        )
        next_position = prompt_positions.masked_fill(prompt_mask[None] == 0, -1).amax(dim=(0, 2)) + 1  # (blocks,)
        width = prompt_ids.shape[1]
        out = torch.zeros((3, blocks.num_rows, blocks.width), dtype=prompt_positions.dtype, device=prompt_ids.device)
        for i, b in enumerate(blocks.blocks):
            out[:, b.row, b.offset : b.offset + b.prompt] = prompt_positions[:, i, width - b.prompt :]
            for start, n in b.response_spans():
                out[:, b.row, start : start + n] = next_position[i] + torch.arange(n, device=out.device)
        return out


class Qwen2_5_VL(Qwen2VL):
    spec = FamilySpec("qwen2_5_vl", model_types=("qwen2_5_vl",), **_QWEN_VL)  # type: ignore[arg-type]


class Qwen3VL(Qwen2VL):
    spec = FamilySpec("qwen3_vl", model_types=("qwen3_vl",), **_QWEN_VL)  # type: ignore[arg-type]
