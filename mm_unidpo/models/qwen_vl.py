"""Qwen-VL: Qwen2-VL, Qwen2.5-VL and Qwen3-VL.

The processor turns each image into a variable number of patches (`pixel_values` flattened over all
images, `image_grid_thw` one row per image) and expands `<|image_pad|>` to match. Positions are 3-D
M-RoPE indices that the model computes itself from `input_ids`, `image_grid_thw` and the attention
mask, so no `position_ids` are passed (passing 1-D ones would silently drop M-RoPE). Per-token
`mm_token_type_ids`, where the processor returns them, are padded with the tokens.
"""

from __future__ import annotations

import torch

from .base import Adapter, unwrap_model
from .packed import PAD, PackedPairBatch


class Qwen2VLAdapter(Adapter):
    family = "qwen2_vl"
    model_types = ("qwen2_vl",)
    token_extra_keys = ("mm_token_type_ids", "token_type_ids")
    pass_position_ids = False

    def packed_position_ids(self, model, batch: PackedPairBatch) -> torch.Tensor:
        """3-D M-RoPE positions for the packed row: the model's own rope index for the prompt (images
        included), then both responses continue from the same next position, as text (t = h = w)."""
        p = batch.prompt_length
        prompt_mask = (batch.segments[:, :p] != PAD).long()
        extras = {k: v[:, :p] for k, v in batch.token_extras.items() if k == "mm_token_type_ids"}
        prompt_positions, _ = unwrap_model(model).model.get_rope_index(
            batch.input_ids[:, :p], image_grid_thw=batch.vision.get("image_grid_thw"), attention_mask=prompt_mask,
            **extras)
        next_position = prompt_positions.masked_fill(prompt_mask[None] == 0, -1).amax(dim=(0, 2)) + 1  # (B,)
        offset = batch.position_ids[:, p:] - prompt_mask.sum(-1, keepdim=True)  # 0, 1, ... in each response
        responses = (next_position[:, None] + offset).clamp(min=0)
        return torch.cat([prompt_positions, responses[None].expand(3, -1, -1).to(prompt_positions)], dim=2)


class Qwen2_5_VLAdapter(Qwen2VLAdapter):  # noqa: N801 (the model's own name)
    family = "qwen2_5_vl"
    model_types = ("qwen2_5_vl",)


class Qwen3VLAdapter(Qwen2VLAdapter):
    family = "qwen3_vl"
    model_types = ("qwen3_vl",)
