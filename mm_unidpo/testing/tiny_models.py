"""Tiny random-weight models of the real transformers classes, with offline processors.

``tiny(family, seed=0, **overrides) -> (model, processor)``.  Nothing is downloaded: the
tokenizer is trained locally (:mod:`mm_unidpo.testing.tokenizer`), image processors are the PIL
("slow") classes built from arguments, and weights are random (``torch.manual_seed(seed)`` right
before construction, so the same seed gives the same weights).  Models are float32, in train
mode as constructed, ``attn_implementation="sdpa"``.

Text models: hidden 64, 2 layers, 4 heads / 2 kv heads (head_dim 16), vocab = tokenizer size
(~605) rounded up to a multiple of 64 (640; llava_orig: exactly len(tokenizer) = 603, as LLaVA-1.5),
untied embeddings.  Vision: 2 layers, width 32.

=================  ==========================================  ==============================  =====================
family             model class                                 processor                       image tokens (512x512)
=================  ==========================================  ==============================  =====================
causal_lm          LlamaForCausalLM                            the tokenizer (llama3 style)    --
llava              LlavaForConditionalGeneration (CLIP 32/8)   LlavaProcessor                  16
llava_next         LlavaNextForConditionalGeneration (Mistral) LlavaNextProcessor              36 = 16 + 1 tile 4x(4+1)
llava_onevision    LlavaOnevisionForConditionalGeneration      LlavaOnevisionProcessor [*]     36 (17 if >1 per row)
qwen2_vl           Qwen2VLForConditionalGeneration (patch 14)  Qwen2VLProcessor [*]            4..16 (112x112 max)
qwen2_5_vl         Qwen2_5_VLForConditionalGeneration          Qwen2_5_VLProcessor [*]         4..16
qwen3_vl           Qwen3VLForConditionalGeneration (patch 16)  Qwen3VLProcessor [*]            4..16 (128x128 max)
llava_orig         llava.model.LlavaLlamaForCausalLM           llava_orig.LlavaOrigProcessor   1 id (-200) -> 16
gemma3             Gemma3ForConditionalGeneration (SigLIP)     Gemma3Processor                 4 (+ boi/eoi, "\n\n")
gemma4             Gemma4ForConditionalGeneration              Gemma4Processor [*]             60..64 (70 max; patch
                                                                                               8, 2x2 pooled; + boi/eoi)
idefics3           Idefics3ForConditionalGeneration (Llama)    Idefics3Processor               40 = (9 tiles + 1) x 4
smolvlm            SmolVLMForConditionalGeneration (Llama)     SmolVLMProcessor [*]            40 = (9 tiles + 1) x 4
internvl           InternVLForConditionalGeneration (Qwen2)    InternVLProcessor [*]           (1..6 tiles + 1) x 4
qwen3_5            Qwen3_5ForConditionalGeneration             Qwen3VLProcessor [*]            4..16 (128x128 max)
                   (layer 0 Gated DeltaNet, layer 1 attention)
glm4v              Glm4vForConditionalGeneration (patch 14)    Glm4vProcessor [*]              4 (6 for 640x427)
qwen3_vl_moe,      the MoE classes of qwen3_vl, qwen3_5, glm4v: as those, with 4 experts (2 per token, 32 wide) in every
qwen3_5_moe,       MoE layer (glm4v_moe: layer 0 dense, layer 1 MoE + a shared expert; qwen3_5_moe: + a shared expert)
glm4v_moe
mllama             MllamaForConditionalGeneration              MllamaProcessor                 1 (<|image|>; 1..4 tiles
                   (layer 1 of 3 cross-attends to the images)                                  of 16 patches + CLS
                                                                                               cross-attended)
aya_vision         AyaVisionForConditionalGeneration           AyaVisionProcessor              (1..4 tiles + 1) x 4
(generic)          (SigLIP, Cohere-2: layer 0 sliding window)                                  (+ tile / boi / eoi)
deepseek_vl        DeepseekVLForConditionalGeneration          DeepseekVLProcessor             16
(generic)          (SigLIP, Llama)
=================  ==========================================  ==============================  =====================

[*] built by :func:`mm_unidpo.models.processors.processor_without_video` (no torchvision).

Overrides (all optional):
    ``hidden_size``, ``num_hidden_layers``, ``attn_implementation``, ``vocab_size``: text model;
    ``text_config={...}`` / ``vision_config={...}``: extra fields for those sub-configs;
    ``padding_side``: the tokenizer's (default ``"right"``);
    any other key is set on the top-level config.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import transformers

from .tiny_classic import _causal_lm, _llava, _llava_next, _llava_onevision, _qwen_vl
from .tiny_common import clip_vision, text_kwargs
from .tiny_generic import BUILDERS as GENERIC_BUILDERS
from .tiny_recent import _gemma3, _gemma4, _idefics3, _internvl, _mllama

__all__ = ["FAMILIES", "GENERIC", "available_families", "tiny"]

# family -> builder(family, seed, attn, padding_side, overrides) -> (model, processor); llava_orig (below) needs
# llava-torch, imported only when built.
BUILDERS: dict[str, Callable[..., tuple[Any, Any]] | None] = {
    "causal_lm": _causal_lm,
    "llava": _llava,
    "llava_next": _llava_next,
    "llava_onevision": _llava_onevision,
    "qwen2_vl": _qwen_vl,
    "qwen2_5_vl": _qwen_vl,
    "qwen3_vl": _qwen_vl,
    "llava_orig": None,
    "gemma3": _gemma3,
    "idefics3": _idefics3,
    "smolvlm": _idefics3,
    "internvl": _internvl,
    "qwen3_5": _qwen_vl,
    "glm4v": _qwen_vl,
    "qwen3_vl_moe": _qwen_vl,
    "qwen3_5_moe": _qwen_vl,
    "glm4v_moe": _qwen_vl,
    "mllama": _mllama,
    "gemma4": _gemma4,
    **GENERIC_BUILDERS,
}
# Model types no family file claims (the generic family serves them), kept out of the family list that the
# per-family tests run over.
GENERIC = tuple(GENERIC_BUILDERS)
FAMILIES = tuple(f for f in BUILDERS if f not in GENERIC)


def available_families() -> tuple[str, ...]:
    """The families that can be built here (``qwen3_vl`` needs transformers with Qwen3-VL,
    ``llava_orig`` needs the ``llava-torch`` package)."""
    out = []
    for fam in FAMILIES:
        if fam == "qwen3_vl" and not hasattr(transformers, "Qwen3VLForConditionalGeneration"):
            continue
        if fam == "llava_orig" and importlib.util.find_spec("llava") is None:
            continue
        out.append(fam)
    return tuple(out)


def tiny(family: str, seed: int = 0, **overrides: Any) -> tuple[Any, Any]:
    """Build ``(model, processor)`` for ``family`` (one of :data:`FAMILIES` or :data:`GENERIC`); see module doc."""
    ov = dict(overrides)
    attn = ov.pop("attn_implementation", "sdpa")
    padding_side = ov.pop("padding_side", "right")
    if family not in BUILDERS:
        raise ValueError(f"unknown family {family!r}; choose one of {FAMILIES + GENERIC}")
    builder = BUILDERS[family]
    if builder is None:
        from .llava_orig import tiny_llava_orig  # imports `llava` (llava-torch) only here

        return tiny_llava_orig(
            seed=seed,
            attn=attn,
            padding_side=padding_side,
            text_kwargs=text_kwargs,
            clip_vision=clip_vision,
            overrides=ov,
        )
    return builder(family, seed, attn, padding_side, ov)
