"""The MoE variant of `Glm4v` (`glm4v_moe`, GLM-4.5V): the same processor, positions and hooks;
the language model's MLPs are mixtures of experts routed token by token.
Layouts: plain and packed (routing is per token; the attention layers are causal).
"""

from __future__ import annotations

from dataclasses import replace

from .glm4v import Glm4v


class Glm4vMoe(Glm4v):
    spec = replace(Glm4v.spec, name="glm4v_moe", model_types=("glm4v_moe",))
