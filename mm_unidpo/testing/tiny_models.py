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
llava_next         LlavaNextForConditionalGeneration (Mistral) LlavaNextProcessor              36 = base 16 + 1 tile 4x(4+1)
llava_onevision    LlavaOnevisionForConditionalGeneration      LlavaOnevisionProcessor [*]     36 (17 if >1 per row)
qwen2_vl           Qwen2VLForConditionalGeneration (patch 14)  Qwen2VLProcessor [*]            4..16 (112x112 max)
qwen2_5_vl         Qwen2_5_VLForConditionalGeneration          Qwen2_5_VLProcessor [*]         4..16
qwen3_vl           Qwen3VLForConditionalGeneration (patch 16)  Qwen3VLProcessor [*]            4..16 (128x128 max)
llava_orig         llava.model.LlavaLlamaForCausalLM           llava_orig.LlavaOrigProcessor   1 id (-200) -> 16
gemma3             Gemma3ForConditionalGeneration (SigLIP)     Gemma3Processor                 4 (+ boi/eoi, "\n\n")
gemma4             Gemma4ForConditionalGeneration              Gemma4Processor [*]             60..64 (70 max; patch 8,
                                                                                               2x2 pooled; + boi/eoi)
idefics3           Idefics3ForConditionalGeneration (Llama)    Idefics3Processor               40 = (3x3 tiles + global) x 4
smolvlm            SmolVLMForConditionalGeneration (Llama)     SmolVLMProcessor [*]            40 = (3x3 tiles + global) x 4
internvl           InternVLForConditionalGeneration (Qwen2)    InternVLProcessor [*]           (1..6 tiles + thumbnail) x 4
qwen3_5            Qwen3_5ForConditionalGeneration             Qwen3VLProcessor [*]            4..16 (128x128 max)
                   (layer 0 Gated DeltaNet, layer 1 attention)
glm4v              Glm4vForConditionalGeneration (patch 14)    Glm4vProcessor [*]              4 (6 for 640x427)
qwen3_vl_moe,      the MoE classes of qwen3_vl, qwen3_5, glm4v: as those, with 4 experts (2 per token, 32 wide) in every
qwen3_5_moe,       MoE layer (glm4v_moe: layer 0 dense, layer 1 MoE + a shared expert; qwen3_5_moe: + a shared expert)
glm4v_moe
mllama             MllamaForConditionalGeneration              MllamaProcessor                 1 (<|image|>; 1..4 tiles
                   (layer 1 of 3 cross-attends to the images)                                  of 16 patches + CLS
                                                                                               cross-attended)
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
from typing import Any

import torch

from mm_unidpo.models.processors import processor_without_video
from .tokenizer import tiny_tokenizer

__all__ = ["FAMILIES", "available_families", "tiny"]

FAMILIES = ("causal_lm", "llava", "llava_next", "llava_onevision", "qwen2_vl", "qwen2_5_vl", "qwen3_vl", "llava_orig",
            "gemma3", "idefics3", "smolvlm", "internvl", "qwen3_5", "glm4v", "qwen3_vl_moe", "qwen3_5_moe",
            "glm4v_moe", "mllama", "gemma4")

HIDDEN, INTERMEDIATE, LAYERS, HEADS, KV_HEADS = 64, 128, 2, 4, 2  # head_dim 16
CLIP_IMAGE, CLIP_PATCH = 32, 8  # 4x4 = 16 patch features per tile
PINPOINTS = [[32, 32], [32, 64], [64, 32]]  # anyres grids (height, width): 1x1, 1x2, 2x1 tiles


def available_families() -> tuple[str, ...]:
    """The families that can be built here (``qwen3_vl`` needs transformers with Qwen3-VL,
    ``llava_orig`` needs the ``llava-torch`` package)."""
    import transformers

    out = []
    for fam in FAMILIES:
        if fam == "qwen3_vl" and not hasattr(transformers, "Qwen3VLForConditionalGeneration"):
            continue
        if fam == "llava_orig" and importlib.util.find_spec("llava") is None:
            continue
        out.append(fam)
    return tuple(out)


def _round_up(n: int, m: int = 64) -> int:
    return (n + m - 1) // m * m


def _text_kwargs(tok, ov: dict[str, Any]) -> dict[str, Any]:
    kw = dict(
        vocab_size=ov.pop("vocab_size", _round_up(len(tok))),
        hidden_size=ov.pop("hidden_size", HIDDEN),
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=ov.pop("num_hidden_layers", LAYERS),
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        max_position_embeddings=2048,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id,
        tie_word_embeddings=False,
    )
    kw.update(ov.pop("text_config", {}))
    return kw


def _clip_vision(ov: dict[str, Any]):
    from transformers import CLIPVisionConfig

    kw = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
              image_size=CLIP_IMAGE, patch_size=CLIP_PATCH, projection_dim=32)
    kw.update(ov.pop("vision_config", {}))
    return CLIPVisionConfig(**kw)


def _finish(model_cls, config, ov: dict[str, Any], seed: int, attn: str):
    for key, value in ov.items():
        setattr(config, key, value)
    torch.manual_seed(seed)
    model = model_cls._from_config(config, attn_implementation=attn, dtype=torch.float32)
    return model


def tiny(family: str, seed: int = 0, **overrides: Any):
    """Build ``(model, processor)`` for ``family`` (one of :data:`FAMILIES`); see module doc."""
    ov = dict(overrides)
    attn = ov.pop("attn_implementation", "sdpa")
    padding_side = ov.pop("padding_side", "right")
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of {FAMILIES}")
    if family == "llava_orig":
        from .llava_orig import tiny_llava_orig  # imports `llava` (llava-torch) only here

        return tiny_llava_orig(seed=seed, attn=attn, padding_side=padding_side, text_kwargs=_text_kwargs,
                               clip_vision=_clip_vision, overrides=ov)
    builder = {"causal_lm": _causal_lm, "llava": _llava, "llava_next": _llava_next,
               "llava_onevision": _llava_onevision, "gemma3": _gemma3, "gemma4": _gemma4,
               "idefics3": _idefics3, "smolvlm": _idefics3, "internvl": _internvl,
               "mllama": _mllama}.get(family, _qwen_vl)
    return builder(family, seed, attn, padding_side, ov)


def _causal_lm(family, seed, attn, padding_side, ov):
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer("llama3", padding_side=padding_side)
    config = LlamaConfig(**_text_kwargs(tok, ov))
    return _finish(LlamaForCausalLM, config, ov, seed, attn), tok


def _llava(family, seed, attn, padding_side, ov):
    from transformers import (CLIPImageProcessorPil, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration,
                              LlavaProcessor)

    tok = tiny_tokenizer("llava", padding_side=padding_side)
    vision = _clip_vision(ov)
    n_tokens = (vision.image_size // vision.patch_size) ** 2  # "default" drops CLS: 17 - 1
    config = LlavaConfig(
        vision_config=vision, text_config=LlamaConfig(**_text_kwargs(tok, ov)),
        image_token_index=tok.image_token_id, image_seq_length=n_tokens,
        vision_feature_select_strategy="default", vision_feature_layer=-2,
    )
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": vision.image_size}, crop_size={"height": vision.image_size, "width": vision.image_size})
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tok, patch_size=vision.patch_size,
        vision_feature_select_strategy="default", num_additional_image_tokens=1, chat_template=tok.chat_template)
    return _finish(LlavaForConditionalGeneration, config, ov, seed, attn), processor


def _llava_next(family, seed, attn, padding_side, ov):
    from transformers import (LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextImageProcessorPil,
                              LlavaNextProcessor, MistralConfig)

    tok = tiny_tokenizer("mistral", padding_side=padding_side)
    vision = _clip_vision(ov)
    size = vision.image_size
    pinpoints = [[h * size // CLIP_IMAGE, w * size // CLIP_IMAGE] for h, w in PINPOINTS]
    config = LlavaNextConfig(
        vision_config=vision, text_config=MistralConfig(**_text_kwargs(tok, ov), sliding_window=None),
        image_token_index=tok.image_token_id, image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="default", vision_feature_layer=-2,
        image_seq_length=(size // vision.patch_size) ** 2,
    )
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}, image_grid_pinpoints=pinpoints)
    processor = LlavaNextProcessor(
        image_processor=image_processor, tokenizer=tok, patch_size=vision.patch_size,
        vision_feature_select_strategy="default", num_additional_image_tokens=1, chat_template=tok.chat_template)
    return _finish(LlavaNextForConditionalGeneration, config, ov, seed, attn), processor


def _llava_onevision(family, seed, attn, padding_side, ov):
    from transformers import (LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration,
                              LlavaOnevisionImageProcessorPil, LlavaOnevisionProcessor, Qwen2Config,
                              SiglipVisionConfig)

    tok = tiny_tokenizer("chatml_llava", padding_side=padding_side)
    vkw = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
               image_size=CLIP_IMAGE, patch_size=CLIP_PATCH)
    vkw.update(ov.pop("vision_config", {}))
    vision = SiglipVisionConfig(**vkw)
    size = vision.image_size
    pinpoints = [[h * size // CLIP_IMAGE, w * size // CLIP_IMAGE] for h, w in PINPOINTS]
    n_tokens = (size // vision.patch_size) ** 2  # SigLIP has no CLS token: "full" keeps all
    config = LlavaOnevisionConfig(
        vision_config=vision, text_config=Qwen2Config(**_text_kwargs(tok, ov)),
        image_token_index=tok.image_token_id, video_token_index=tok.video_token_id,
        image_grid_pinpoints=pinpoints, vision_feature_select_strategy="full", vision_feature_layer=-1,
        vision_aspect_ratio="anyres_max_9",
    )
    image_processor = LlavaOnevisionImageProcessorPil(
        size={"height": size, "width": size}, image_grid_pinpoints=pinpoints,
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    processor = processor_without_video(
        LlavaOnevisionProcessor, image_processor=image_processor, tokenizer=tok, num_image_tokens=n_tokens,
        vision_feature_select_strategy="full", vision_aspect_ratio="anyres_max_9")
    return _finish(LlavaOnevisionForConditionalGeneration, config, ov, seed, attn), processor


def _qwen_vl(family, seed, attn, padding_side, ov):
    import transformers as T

    moe = family.endswith("_moe")
    family = family.removesuffix("_moe")
    style = {"qwen3_vl": "qwen3_vl", "qwen3_5": "qwen3_vl", "glm4v": "glm4v"}.get(family, "qwen2_vl")
    tok = tiny_tokenizer(style, padding_side=padding_side)
    text = _text_kwargs(tok, ov)
    head_dim = text["hidden_size"] // text["num_attention_heads"]
    q = head_dim // 2  # mrope sections (t, h, w) must add up to head_dim / 2
    section = [q - 2 * (3 * q // 8), 3 * q // 8, 3 * q // 8]
    if family == "qwen2_vl":
        cfg_cls, model_cls, proc_cls = T.Qwen2VLConfig, T.Qwen2VLForConditionalGeneration, T.Qwen2VLProcessor
        patch = 14
        vision = dict(depth=2, embed_dim=32, hidden_size=text["hidden_size"], mlp_ratio=2, num_heads=2,
                      patch_size=patch)
        rope = {"rope_type": "default", "mrope_section": section, "rope_theta": 1e6}
    elif family == "qwen2_5_vl":
        cfg_cls, model_cls, proc_cls = T.Qwen2_5_VLConfig, T.Qwen2_5_VLForConditionalGeneration, T.Qwen2_5_VLProcessor
        patch = 14
        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=text["hidden_size"],
                      patch_size=patch, window_size=56, fullatt_block_indexes=[1])
        rope = {"rope_type": "default", "mrope_section": section, "rope_theta": 1e6}
    elif family == "glm4v":
        # M-RoPE on half of each head (partial_rotary_factor 0.5: 4 frequencies, sections t, h, w = 2, 1, 1)
        cfg_cls, model_cls, proc_cls = T.Glm4vConfig, T.Glm4vForConditionalGeneration, T.Glm4vProcessor
        patch = 14
        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=text["hidden_size"],
                      patch_size=patch, image_size=112)
        rope = {"rope_type": "default", "mrope_section": [2, 1, 1], "rope_theta": 1e4, "partial_rotary_factor": 0.5}
    elif family == "qwen3_5":
        # a linear-attention (Gated DeltaNet) layer, then a full-attention one; interleaved M-RoPE on half of
        # each head (partial_rotary_factor 0.5: 4 frequencies, sections t, h, w = 2, 1, 1)
        cfg_cls, model_cls, proc_cls = T.Qwen3_5Config, T.Qwen3_5ForConditionalGeneration, T.Qwen3VLProcessor
        patch = 16
        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=text["hidden_size"],
                      patch_size=patch, num_position_embeddings=64)
        rope = {"rope_type": "default", "mrope_section": [2, 1, 1], "mrope_interleaved": True, "rope_theta": 1e7,
                "partial_rotary_factor": 0.5}
        text.setdefault("head_dim", head_dim)
        text.setdefault("layer_types", ["linear_attention", "full_attention"] * (text["num_hidden_layers"] // 2)
                        + ["linear_attention"] * (text["num_hidden_layers"] % 2))
        for key, value in dict(linear_conv_kernel_dim=4, linear_key_head_dim=8, linear_value_head_dim=8,
                               linear_num_key_heads=2, linear_num_value_heads=4).items():
            text.setdefault(key, value)
    else:
        cfg_cls, model_cls, proc_cls = T.Qwen3VLConfig, T.Qwen3VLForConditionalGeneration, T.Qwen3VLProcessor
        patch = 16
        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=text["hidden_size"],
                      patch_size=patch, num_position_embeddings=64, deepstack_visual_indexes=[0])
        rope = {"rope_type": "default", "mrope_section": section, "mrope_interleaved": True, "rope_theta": 5e6}
        text["head_dim"] = head_dim
    text.setdefault("rope_parameters", rope)
    if moe:  # the MoE classes of the same family: 4 experts, 2 per token
        cfg_cls, model_cls = (getattr(T, c.__name__.replace(family_cls, family_cls + "Moe"))
                              for c, family_cls in ((cfg_cls, _MOE_PREFIX[family]), (model_cls, _MOE_PREFIX[family])))
        for key, value in _MOE_TEXT[family].items():
            text.setdefault(key, value)
    vision.update(ov.pop("vision_config", {}))
    patch = vision["patch_size"]
    if family == "glm4v":
        ids = {f"{kind}_{edge}_token_id": tok.convert_tokens_to_ids(f"<|{'begin' if edge == 'start' else edge}_of_{kind}|>")
               for kind in ("image", "video") for edge in ("start", "end")}
    else:
        ids = dict(vision_start_token_id=tok.convert_tokens_to_ids("<|vision_start|>"),
                   vision_end_token_id=tok.convert_tokens_to_ids("<|vision_end|>"))
    config = cfg_cls(text_config=text, vision_config=vision, image_token_id=tok.image_token_id,
                     video_token_id=tok.video_token_id, **ids)
    unit = patch * 2  # one merged token = (2 x patch)^2 pixels
    image_processor = (T.Glm4vImageProcessorPil if family == "glm4v" else T.Qwen2VLImageProcessorPil)(
        patch_size=patch, merge_size=2, temporal_patch_size=2,
        size={"shortest_edge": unit * unit * 4, "longest_edge": unit * unit * 16},  # 4..16 image tokens
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    processor = processor_without_video(proc_cls, image_processor=image_processor, tokenizer=tok)
    return _finish(model_cls, config, ov, seed, attn), processor


_MOE_PREFIX = {"qwen3_vl": "Qwen3VL", "qwen3_5": "Qwen3_5", "glm4v": "Glm4v"}
_MOE_TEXT = {
    "qwen3_vl": dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, decoder_sparse_step=1),
    "qwen3_5": dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=32),
    "glm4v": dict(n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, n_shared_experts=1,
                  first_k_dense_replace=1, n_group=1, topk_group=1),
}


def _siglip_vision(ov: dict[str, Any]):
    from transformers import SiglipVisionConfig

    kw = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
              image_size=CLIP_IMAGE, patch_size=CLIP_PATCH)
    kw.update(ov.pop("vision_config", {}))
    return SiglipVisionConfig(**kw)


GEMMA3_SLIDING_WINDOW = 16  # shorter than every test sequence: the sliding layer's window is exercised


def _gemma3(family, seed, attn, padding_side, ov):
    """Gemma-3: layer 0 a sliding-window layer (window 16), layer 1 global; 4 image tokens per image
    (SigLIP 4x4 patches average-pooled 2x2), bidirectional among an image's tokens (``token_type_ids``)."""
    from transformers import (Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessorPil,
                              Gemma3Processor, Gemma3TextConfig)

    tok = tiny_tokenizer("gemma3", padding_side=padding_side)
    vision = _siglip_vision(ov)
    text = _text_kwargs(tok, ov)
    text.setdefault("head_dim", text["hidden_size"] // text["num_attention_heads"])
    text.setdefault("query_pre_attn_scalar", text["head_dim"])
    text.setdefault("sliding_window", GEMMA3_SLIDING_WINDOW)
    text.setdefault("layer_types", ["sliding_attention", "full_attention"] * (text["num_hidden_layers"] // 2)
                    + ["sliding_attention"] * (text["num_hidden_layers"] % 2))
    n_tokens = 4
    config = Gemma3Config(text_config=Gemma3TextConfig(**text), vision_config=vision, mm_tokens_per_image=n_tokens,
                          boi_token_index=tok.boi_token_id, eoi_token_index=tok.eoi_token_id,
                          image_token_index=tok.image_token_id, tie_word_embeddings=False)
    image_processor = Gemma3ImageProcessorPil(size={"height": vision.image_size, "width": vision.image_size},
                                              image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    processor = Gemma3Processor(image_processor=image_processor, tokenizer=tok, chat_template=tok.chat_template,
                                image_seq_length=n_tokens)
    model = _finish(Gemma3ForConditionalGeneration, config, ov, seed, attn)
    # transformers initialises the projection to zeros (the images would not matter): random, from the seed
    with torch.no_grad():
        weight = model.model.multi_modal_projector.mm_input_projection_weight
        weight.normal_(std=weight.shape[0] ** -0.5, generator=torch.Generator().manual_seed(seed))
    return model, processor


def _idefics3(family, seed, attn, padding_side, ov):
    """Idefics3 / SmolVLM: an image is resized to a longest edge of 96 and split into 32x32 tiles (up to
    3x3: images of other shapes get other tile counts) plus a 32x32 global view; each tile is 4x4 patches,
    pixel-shuffled (scale 2) into 4 tokens."""
    import transformers as T

    from mm_unidpo.models.families.smolvlm import smolvlm_processor

    tok = tiny_tokenizer(family, padding_side=padding_side)
    smol = family == "smolvlm"
    vkw = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
               image_size=CLIP_IMAGE, patch_size=CLIP_PATCH)
    vkw.update(ov.pop("vision_config", {}))
    vision = (T.SmolVLMVisionConfig if smol else T.Idefics3VisionConfig)(**vkw)
    scale = 2
    n_tokens = (vision.image_size // vision.patch_size) ** 2 // scale ** 2
    config = (T.SmolVLMConfig if smol else T.Idefics3Config)(
        vision_config=vision, text_config=T.LlamaConfig(**_text_kwargs(tok, ov)), scale_factor=scale,
        image_token_id=tok.image_token_id)
    image_kwargs = dict(size={"longest_edge": 3 * vision.image_size}, max_image_size={"longest_edge": vision.image_size},
                        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    if smol:
        processor = smolvlm_processor(image_processor=T.SmolVLMImageProcessorPil(**image_kwargs), tokenizer=tok,
                                      image_seq_len=n_tokens, chat_template=tok.chat_template)
        model_cls = T.SmolVLMForConditionalGeneration
    else:
        processor = T.Idefics3Processor(image_processor=T.Idefics3ImageProcessorPil(**image_kwargs), tokenizer=tok,
                                        image_seq_len=n_tokens, chat_template=tok.chat_template)
        model_cls = T.Idefics3ForConditionalGeneration
    return _finish(model_cls, config, ov, seed, attn), processor


def _internvl(family, seed, attn, padding_side, ov):
    """InternVL 3 / 3.5 (transformers format): an image is cropped into 1..6 tiles of 32x32 nearest its aspect
    ratio, plus a thumbnail when there are several; each tile is 4x4 patches, pixel-shuffled (0.5) into 4
    tokens, between <img> and </img>."""
    import transformers as T

    tok = tiny_tokenizer("internvl", padding_side=padding_side)
    vkw = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
               image_size=[CLIP_IMAGE, CLIP_IMAGE], patch_size=[CLIP_PATCH, CLIP_PATCH])
    vkw.update(ov.pop("vision_config", {}))
    vision = T.InternVLVisionConfig(**vkw)
    n_tokens = (vision.image_size[0] // vision.patch_size[0]) ** 2 // 4
    config = T.InternVLConfig(vision_config=vision, text_config=T.Qwen2Config(**_text_kwargs(tok, ov)),
                              image_token_id=tok.context_image_token_id, image_seq_length=n_tokens,
                              downsample_ratio=0.5, tie_word_embeddings=False)
    image_processor = T.GotOcr2ImageProcessorPil(
        size={"height": vision.image_size[0], "width": vision.image_size[1]}, crop_to_patches=True, min_patches=1,
        max_patches=6, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    processor = processor_without_video(T.InternVLProcessor, image_processor=image_processor, tokenizer=tok,
                                        image_seq_length=n_tokens)
    return _finish(T.InternVLForConditionalGeneration, config, ov, seed, attn), processor


def _mllama(family, seed, attn, padding_side, ov):
    """Llama-3.2-Vision: 3 text layers, layer 1 a cross-attention layer; an image is 1..4 tiles of 32x32
    (4x4 patches + CLS each), cross-attended by the text tokens its ``cross_attention_mask`` allows. The
    gates (zero-initialised by transformers: the images would not matter) are random, from the seed."""
    import transformers as T

    tok = tiny_tokenizer("mllama", padding_side=padding_side)
    text = _text_kwargs(tok, ov)
    text["num_hidden_layers"] = max(text["num_hidden_layers"], 3)
    text.setdefault("cross_attention_layers", [1])
    text.pop("tie_word_embeddings")
    vkw = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_global_layers=1, attention_heads=2,
               image_size=CLIP_IMAGE, patch_size=CLIP_PATCH, max_num_tiles=4, intermediate_layers_indices=[0],
               supported_aspect_ratios=[[1, 1], [1, 2], [1, 3], [1, 4], [2, 1], [2, 2], [3, 1], [4, 1]])
    vkw["vision_output_dim"] = vkw["hidden_size"] * (len(vkw["intermediate_layers_indices"]) + 1)
    vkw.update(ov.pop("vision_config", {}))
    config = T.MllamaConfig(vision_config=T.MllamaVisionConfig(**vkw), text_config=T.MllamaTextConfig(**text),
                            image_token_index=tok.image_token_id)
    image_processor = T.MllamaImageProcessorPil(size={"height": CLIP_IMAGE, "width": CLIP_IMAGE}, max_image_tiles=4,
                                                image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    processor = T.MllamaProcessor(image_processor=image_processor, tokenizer=tok, chat_template=tok.chat_template)
    model = _finish(T.MllamaForConditionalGeneration, config, ov, seed, attn)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("gate"):
                param.uniform_(0.5, 1.0, generator=generator)
    return model, processor


def _gemma4(family, seed, attn, padding_side, ov):
    """Gemma-4: layer 0 sliding-window (window 16), layer 1 global; per-layer input embeddings (width 8);
    images cut into patches of 8 pixels, 2x2-pooled into at most 70 soft tokens, bidirectional among an
    image's tokens (``mm_token_type_ids``)."""
    import transformers as T

    from mm_unidpo.models.families.gemma4 import gemma4_processor_class

    tok = tiny_tokenizer("gemma4", padding_side=padding_side)
    text = _text_kwargs(tok, ov)
    head_dim = text["hidden_size"] // text["num_attention_heads"]
    for key, value in dict(head_dim=head_dim, global_head_dim=head_dim, sliding_window=GEMMA3_SLIDING_WINDOW,
                           vocab_size_per_layer_input=text["vocab_size"], hidden_size_per_layer_input=8,
                           use_bidirectional_attention="vision").items():
        text.setdefault(key, value)
    text.setdefault("layer_types", ["sliding_attention", "full_attention"] * (text["num_hidden_layers"] // 2)
                    + ["full_attention"] * (text["num_hidden_layers"] % 2))
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=2, head_dim=16, patch_size=8, pooling_kernel_size=2, position_embedding_size=256)
    vision.update(ov.pop("vision_config", {}))
    config = T.Gemma4Config(text_config=text, vision_config=vision, audio_config=None, boi_token_id=tok.boi_token_id,
                            eoi_token_id=tok.eoi_token_id, image_token_id=tok.image_token_id,
                            video_token_id=tok.pad_token_id, tie_word_embeddings=False)
    image_processor = T.Gemma4ImageProcessorPil(patch_size=vision["patch_size"], max_soft_tokens=70,
                                                pooling_kernel_size=vision["pooling_kernel_size"])
    processor = gemma4_processor_class()(image_processor=image_processor, tokenizer=tok,
                                         chat_template=tok.chat_template, image_seq_length=70)
    config.video_token_id = processor.video_token_id
    return _finish(T.Gemma4ForConditionalGeneration, config, ov, seed, attn), processor
