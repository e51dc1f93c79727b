"""Model families: one file each, one line each in `FAMILIES`.

A family file declares a `FamilySpec` (model types, auto class, vision-tower and projector module names,
the exact layouts) and overrides only the hooks of `Family` (base.py) in which it differs. `loading`,
`train.setup` and `get_adapter` all read this one registry. A model type no file claims goes to the
generic family when transformers maps it to AutoModelForImageTextToText, else to the causal-LM family
(a model without a vision tower).
"""

from __future__ import annotations

from typing import Any

from .base import Family, FamilySpec
from .causal_lm import CausalLM
from .gemma3 import Gemma3
from .gemma4 import Gemma4
from .generic import Generic
from .glm4v import Glm4v
from .glm4v_moe import Glm4vMoe
from .idefics3 import Idefics3
from .internvl import InternVL
from .llava import Llava, LlavaNext, LlavaOnevision
from .llava_orig import LlavaOrig
from .mllama import Mllama
from .qwen3_5 import Qwen3_5
from .qwen3_5_moe import Qwen3_5Moe
from .qwen3_vl_moe import Qwen3VLMoe
from .qwen_vl import Qwen2_5_VL, Qwen2VL, Qwen3VL
from .smolvlm import SmolVLM

FAMILIES: dict[str, type[Family]] = {
    family.spec.name: family
    for family in (
        Llava,
        LlavaNext,
        LlavaOnevision,
        Qwen2VL,
        Qwen2_5_VL,
        Qwen3VL,
        LlavaOrig,
        Gemma3,
        Gemma4,
        Idefics3,
        SmolVLM,
        InternVL,
        Qwen3_5,
        Glm4v,
        Qwen3VLMoe,
        Qwen3_5Moe,
        Glm4vMoe,
        Mllama,
        Generic,
        CausalLM,
    )
}

FALLBACK = CausalLM

__all__ = [
    "FAMILIES",
    "Family",
    "FamilySpec",
    "family_for_model",
    "family_for_model_type",
    "projector_module_names",
    "vision_module_names",
]


def family_for_model_type(model_type: str | None) -> type[Family]:
    """The family serving checkpoints of `model_type`: the generic family for any other image-text-to-text
    type, the causal-LM fallback for the rest."""
    claimed = next((f for f in FAMILIES.values() if model_type in f.spec.model_types), None)
    return claimed or (Generic if Generic.accepts(model_type) else FALLBACK)


def family_for_model(model: Any) -> type[Family]:
    """The family of a loaded model (from its config's model_type); an error naming the known ones."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    family = family_for_model_type(model_type)
    if family is FALLBACK and not FALLBACK.accepts(model):
        raise ValueError(
            f"no adapter for {type(model).__name__} (model_type={model_type!r}); known families: {', '.join(FAMILIES)}"
        )
    return family


def vision_module_names() -> tuple[str, ...]:
    """Module-name parts of every family's vision tower."""
    return tuple(dict.fromkeys(n for f in FAMILIES.values() for n in f.spec.vision_modules))


def projector_module_names() -> tuple[str, ...]:
    """Module-name parts of every family's multimodal projector."""
    return tuple(dict.fromkeys(n for f in FAMILIES.values() for n in f.spec.projector_modules))
