"""Tiny builders of the first families: causal LM, LLaVA-1.5 / NeXT / OneVision, Qwen-VL (with GLM-4.1V and
the MoE variants, which share Qwen's 3-D positions)."""

from __future__ import annotations

from typing import Any

from mm_unidpo.models.processors import processor_without_video

from .tiny_common import CLIP_IMAGE, PINPOINTS, clip_vision, finish, text_kwargs, vision_kwargs
from .tokenizer import tiny_tokenizer

_MOE_PREFIX = {"qwen3_vl": "Qwen3VL", "qwen3_5": "Qwen3_5", "glm4v": "Glm4v"}
_MOE_TEXT = {
    "qwen3_vl": dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, decoder_sparse_step=1),
    "qwen3_5": dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=32),
    "glm4v": dict(
        n_routed_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=32,
        n_shared_experts=1,
        first_k_dense_replace=1,
        n_group=1,
        topk_group=1,
    ),
}


def _causal_lm(family, seed, attn, padding_side, ov):
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer("llama3", padding_side=padding_side)
    config = LlamaConfig(**text_kwargs(tok, ov))
    return finish(LlamaForCausalLM, config, ov, seed, attn), tok


def _llava(family, seed, attn, padding_side, ov):
    from transformers import (
        CLIPImageProcessorPil,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tok = tiny_tokenizer("llava", padding_side=padding_side)
    vision = clip_vision(ov)
    n_tokens = (vision.image_size // vision.patch_size) ** 2  # "default" drops CLS: 17 - 1
    config = LlavaConfig(
        vision_config=vision,
        text_config=LlamaConfig(**text_kwargs(tok, ov)),
        image_token_index=tok.image_token_id,
        image_seq_length=n_tokens,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": vision.image_size}, crop_size={"height": vision.image_size, "width": vision.image_size}
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=vision.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=tok.chat_template,
    )
    return finish(LlavaForConditionalGeneration, config, ov, seed, attn), processor


def _llava_next(family, seed, attn, padding_side, ov):
    from transformers import (
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessorPil,
        LlavaNextProcessor,
        MistralConfig,
    )

    tok = tiny_tokenizer("mistral", padding_side=padding_side)
    vision = clip_vision(ov)
    size = vision.image_size
    pinpoints = [[h * size // CLIP_IMAGE, w * size // CLIP_IMAGE] for h, w in PINPOINTS]
    config = LlavaNextConfig(
        vision_config=vision,
        text_config=MistralConfig(**text_kwargs(tok, ov), sliding_window=None),
        image_token_index=tok.image_token_id,
        image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        image_seq_length=(size // vision.patch_size) ** 2,
    )
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}, image_grid_pinpoints=pinpoints
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=vision.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=tok.chat_template,
    )
    return finish(LlavaNextForConditionalGeneration, config, ov, seed, attn), processor


def _llava_onevision(family, seed, attn, padding_side, ov):
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessorPil,
        LlavaOnevisionProcessor,
        Qwen2Config,
        SiglipVisionConfig,
    )

    tok = tiny_tokenizer("chatml_llava", padding_side=padding_side)
    vkw = vision_kwargs(ov)
    vision = SiglipVisionConfig(**vkw)
    size: int = vision.image_size  # type: ignore[assignment]  # an int in our config
    pinpoints = [[h * size // CLIP_IMAGE, w * size // CLIP_IMAGE] for h, w in PINPOINTS]
    patch: int = vision.patch_size  # type: ignore[assignment]  # an int in our config
    n_tokens = (size // patch) ** 2  # SigLIP has no CLS token: "full" keeps all
    config = LlavaOnevisionConfig(
        vision_config=vision,
        text_config=Qwen2Config(**text_kwargs(tok, ov)),
        image_token_index=tok.image_token_id,
        video_token_index=tok.video_token_id,
        image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        vision_aspect_ratio="anyres_max_9",
    )
    image_processor = LlavaOnevisionImageProcessorPil(
        size={"height": size, "width": size},
        image_grid_pinpoints=pinpoints,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    processor = processor_without_video(
        LlavaOnevisionProcessor,
        image_processor=image_processor,
        tokenizer=tok,
        num_image_tokens=n_tokens,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
    )
    return finish(LlavaOnevisionForConditionalGeneration, config, ov, seed, attn), processor


def _qwen_vl(family, seed, attn, padding_side, ov):
    import transformers as T

    moe = family.endswith("_moe")
    family = family.removesuffix("_moe")
    style = {"qwen3_vl": "qwen3_vl", "qwen3_5": "qwen3_vl", "glm4v": "glm4v"}.get(family, "qwen2_vl")
    tok = tiny_tokenizer(style, padding_side=padding_side)
    text = text_kwargs(tok, ov)
    head_dim = text["hidden_size"] // text["num_attention_heads"]
    q = head_dim // 2  # mrope sections (t, h, w) must add up to head_dim / 2
    section = [q - 2 * (3 * q // 8), 3 * q // 8, 3 * q // 8]
    cfg_cls: type[Any]
    model_cls: type[Any]
    proc_cls: type[Any]
    if family == "qwen2_vl":
        cfg_cls, model_cls, proc_cls = T.Qwen2VLConfig, T.Qwen2VLForConditionalGeneration, T.Qwen2VLProcessor
        patch = 14
        vision: dict[str, Any] = dict(
            depth=2, embed_dim=32, hidden_size=text["hidden_size"], mlp_ratio=2, num_heads=2, patch_size=patch
        )
        rope = {"rope_type": "default", "mrope_section": section, "rope_theta": 1e6}
    elif family == "qwen2_5_vl":
        cfg_cls, model_cls, proc_cls = T.Qwen2_5_VLConfig, T.Qwen2_5_VLForConditionalGeneration, T.Qwen2_5_VLProcessor
        patch = 14
        vision = dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            out_hidden_size=text["hidden_size"],
            patch_size=patch,
            window_size=56,
            fullatt_block_indexes=[1],
        )
        rope = {"rope_type": "default", "mrope_section": section, "rope_theta": 1e6}
    elif family == "glm4v":
        # M-RoPE on half of each head (partial_rotary_factor 0.5: 4 frequencies, sections t, h, w = 2, 1, 1)
        cfg_cls, model_cls, proc_cls = T.Glm4vConfig, T.Glm4vForConditionalGeneration, T.Glm4vProcessor
        patch = 14
        vision = dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            out_hidden_size=text["hidden_size"],
            patch_size=patch,
            image_size=112,
        )
        rope = {"rope_type": "default", "mrope_section": [2, 1, 1], "rope_theta": 1e4, "partial_rotary_factor": 0.5}
    elif family == "qwen3_5":
        # a linear-attention (Gated DeltaNet) layer, then a full-attention one; interleaved M-RoPE on half of
        # each head (partial_rotary_factor 0.5: 4 frequencies, sections t, h, w = 2, 1, 1)
        cfg_cls, model_cls, proc_cls = T.Qwen3_5Config, T.Qwen3_5ForConditionalGeneration, T.Qwen3VLProcessor
        patch = 16
        vision = dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            out_hidden_size=text["hidden_size"],
            patch_size=patch,
            num_position_embeddings=64,
        )
        rope = {
            "rope_type": "default",
            "mrope_section": [2, 1, 1],
            "mrope_interleaved": True,
            "rope_theta": 1e7,
            "partial_rotary_factor": 0.5,
        }
        text.setdefault("head_dim", head_dim)
        text.setdefault(
            "layer_types",
            ["linear_attention", "full_attention"] * (text["num_hidden_layers"] // 2)
            + ["linear_attention"] * (text["num_hidden_layers"] % 2),
        )
        for key, value in dict(
            linear_conv_kernel_dim=4,
            linear_key_head_dim=8,
            linear_value_head_dim=8,
            linear_num_key_heads=2,
            linear_num_value_heads=4,
        ).items():
            text.setdefault(key, value)
    else:
        cfg_cls, model_cls, proc_cls = T.Qwen3VLConfig, T.Qwen3VLForConditionalGeneration, T.Qwen3VLProcessor
        patch = 16
        vision = dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            out_hidden_size=text["hidden_size"],
            patch_size=patch,
            num_position_embeddings=64,
            deepstack_visual_indexes=[0],
        )
        rope = {"rope_type": "default", "mrope_section": section, "mrope_interleaved": True, "rope_theta": 5e6}
        text["head_dim"] = head_dim
    text.setdefault("rope_parameters", rope)
    if moe:  # the MoE classes of the same family: 4 experts, 2 per token
        cfg_cls, model_cls = (
            getattr(T, c.__name__.replace(family_cls, family_cls + "Moe"))
            for c, family_cls in ((cfg_cls, _MOE_PREFIX[family]), (model_cls, _MOE_PREFIX[family]))
        )
        for key, value in _MOE_TEXT[family].items():
            text.setdefault(key, value)
    vision.update(ov.pop("vision_config", {}))
    patch = vision["patch_size"]
    if family == "glm4v":
        ids = {
            f"{kind}_{edge}_token_id": tok.convert_tokens_to_ids(
                f"<|{'begin' if edge == 'start' else edge}_of_{kind}|>"
            )
            for kind in ("image", "video")
            for edge in ("start", "end")
        }
    else:
        ids = dict(
            vision_start_token_id=tok.convert_tokens_to_ids("<|vision_start|>"),
            vision_end_token_id=tok.convert_tokens_to_ids("<|vision_end|>"),
        )
    config = cfg_cls(
        text_config=text,
        vision_config=vision,
        image_token_id=tok.image_token_id,
        video_token_id=tok.video_token_id,
        **ids,
    )
    unit = patch * 2  # one merged token = (2 x patch)^2 pixels
    processor_cls: Any = T.Glm4vImageProcessorPil if family == "glm4v" else T.Qwen2VLImageProcessorPil
    image_processor = processor_cls(
        patch_size=patch,
        merge_size=2,
        temporal_patch_size=2,
        size={"shortest_edge": unit * unit * 4, "longest_edge": unit * unit * 16},  # 4..16 image tokens
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    processor = processor_without_video(proc_cls, image_processor=image_processor, tokenizer=tok)
    return finish(model_cls, config, ov, seed, attn), processor
