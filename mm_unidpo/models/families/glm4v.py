"""GLM-4.1V (`glm4v`, zai-org/GLM-4.1V-9B-Thinking; GLM-4.5V is the MoE variant, `glm4v_moe`):
Qwen2-VL's layout of the image side (flattened patches, ``image_grid_thw``, ``<|image|>`` expanded
between ``<|begin_of_image|>`` and ``<|end_of_image|>``) and its 3-D M-RoPE positions (the model's own
``get_rope_index`` for each prompt, from ``mm_token_type_ids``; responses continue from it as text),
so the Qwen-VL hooks serve it.

The template does not close an assistant turn with a token (the model ends it with ``<|endoftext|>`` or
starts the next ``<|user|>``): a response is scored up to its text and the end-of-text token. The
language model is causal: plain and packed are the same computation (varlen kernels take 1-D
positions only).
"""

from __future__ import annotations

from .base import FamilySpec
from .qwen_vl import _QWEN_VL, Qwen2VL


class Glm4v(Qwen2VL):
    spec = FamilySpec("glm4v", model_types=("glm4v",), **_QWEN_VL)  # type: ignore[arg-type]
