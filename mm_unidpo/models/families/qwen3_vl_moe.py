"""The MoE variant of `Qwen3VL` (`qwen3_vl_moe`, Qwen3-VL-30B-A3B / 235B-A22B): the same processor, positions and hooks;
the language model's MLPs are mixtures of experts routed token by token.
Layouts: plain and packed (routing is per token; the attention layers are causal).
"""

from __future__ import annotations

from dataclasses import replace

from .qwen_vl import Qwen3VL


class Qwen3VLMoe(Qwen3VL):
    spec = replace(Qwen3VL.spec, name="qwen3_vl_moe", model_types=("qwen3_vl_moe",))
