"""The MoE variant of `Qwen3_5` (`qwen3_5_moe`, Qwen3.5 MoE): the same processor, positions and hooks;
the language model's MLPs are mixtures of experts routed token by token.
Layouts: plain only (Gated DeltaNet layers, as qwen3_5).
"""

from __future__ import annotations

from dataclasses import replace

from .qwen3_5 import Qwen3_5


class Qwen3_5Moe(Qwen3_5):
    spec = replace(Qwen3_5.spec, name="qwen3_5_moe", model_types=("qwen3_5_moe",))
