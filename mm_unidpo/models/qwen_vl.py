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
from .packed import PackedPairBatch


class Qwen2VLAdapter(Adapter):
    family = "qwen2_vl"
    model_types = ("qwen2_vl",)
    token_extra_keys = ("mm_token_type_ids", "token_type_ids")
    pass_position_ids = False

    def packed_position_ids(self, model, batch: PackedPairBatch) -> torch.Tensor:
        """3-D M-RoPE positions for the packed rows: the model's own rope index for each prompt (images
        included), then both responses continue from the prompt's next position, as text (t = h = w)."""
        prompt_ids, prompt_mask, extras = batch.prompts()
        extras = {k: v for k, v in extras.items() if k == "mm_token_type_ids"}
        prompt_positions, _ = unwrap_model(model).model.get_rope_index(
            prompt_ids, image_grid_thw=batch.vision.get("image_grid_thw"), attention_mask=prompt_mask, **extras)
        next_position = prompt_positions.masked_fill(prompt_mask[None] == 0, -1).amax(dim=(0, 2)) + 1  # (B,)
        layout, width = batch.layout, prompt_ids.shape[1]
        out = torch.zeros((3, layout.num_rows, layout.width), dtype=prompt_positions.dtype, device=prompt_ids.device)
        for i, (row, o, p, c, r) in enumerate(layout.pair_spans()):
            out[:, row, o:o + p] = prompt_positions[:, i, width - p:]
            out[:, row, o + p:o + p + c] = next_position[i] + torch.arange(c, device=out.device)
            out[:, row, o + p + c:o + p + c + r] = next_position[i] + torch.arange(r, device=out.device)
        return out


class Qwen2_5_VLAdapter(Qwen2VLAdapter):  # noqa: N801 (the model's own name)
    family = "qwen2_5_vl"
    model_types = ("qwen2_5_vl",)


class Qwen3VLAdapter(Qwen2VLAdapter):
    family = "qwen3_vl"
    model_types = ("qwen3_vl",)
