"""Qwen-VL: Qwen2-VL, Qwen2.5-VL and Qwen3-VL.

The processor turns each image into a variable number of patches (`pixel_values` flattened over all
images, `image_grid_thw` one row per image) and expands `<|image_pad|>` to match. Positions are 3-D
M-RoPE indices that the model computes itself from `input_ids`, `image_grid_thw` and the attention
mask, so no `position_ids` are passed (passing 1-D ones would silently drop M-RoPE). Per-token
`mm_token_type_ids`, where the processor returns them, are padded with the tokens.
"""

from __future__ import annotations

from .base import Adapter


class Qwen2VLAdapter(Adapter):
    family = "qwen2_vl"
    model_types = ("qwen2_vl",)
    token_extra_keys = ("mm_token_type_ids", "token_type_ids")
    pass_position_ids = False


class Qwen2_5_VLAdapter(Qwen2VLAdapter):  # noqa: N801 (the model's own name)
    family = "qwen2_5_vl"
    model_types = ("qwen2_5_vl",)


class Qwen3VLAdapter(Qwen2VLAdapter):
    family = "qwen3_vl"
    model_types = ("qwen3_vl",)
