"""Tiny builders of Gemma-3 / Gemma-4, Idefics3 / SmolVLM, InternVL and Llama-3.2-Vision (Mllama)."""

from __future__ import annotations

from typing import Any

import torch

from mm_unidpo.models.families.gemma4 import gemma4_processor_class
from mm_unidpo.models.families.smolvlm import smolvlm_processor
from mm_unidpo.models.processors import processor_without_video

from .tiny_common import (
    CLIP_IMAGE,
    CLIP_PATCH,
    GEMMA3_SLIDING_WINDOW,
    finish,
    siglip_vision,
    text_kwargs,
    vision_kwargs,
)
from .tokenizer import tiny_tokenizer


def _gemma3(family, seed, attn, padding_side, ov):
    """Gemma-3: layer 0 a sliding-window layer (window 16), layer 1 global; 4 image tokens per image
    (SigLIP 4x4 patches average-pooled 2x2), bidirectional among an image's tokens (``token_type_ids``)."""
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3ImageProcessorPil,
        Gemma3Processor,
        Gemma3TextConfig,
    )

    tok = tiny_tokenizer("gemma3", padding_side=padding_side)
    vision = siglip_vision(ov)
    text = text_kwargs(tok, ov)
    text.setdefault("head_dim", text["hidden_size"] // text["num_attention_heads"])
    text.setdefault("query_pre_attn_scalar", text["head_dim"])
    text.setdefault("sliding_window", GEMMA3_SLIDING_WINDOW)
    text.setdefault(
        "layer_types",
        ["sliding_attention", "full_attention"] * (text["num_hidden_layers"] // 2)
        + ["sliding_attention"] * (text["num_hidden_layers"] % 2),
    )
    n_tokens = 4
    config = Gemma3Config(
        text_config=Gemma3TextConfig(**text),
        vision_config=vision,
        mm_tokens_per_image=n_tokens,
        boi_token_index=tok.boi_token_id,
        eoi_token_index=tok.eoi_token_id,
        image_token_index=tok.image_token_id,
        tie_word_embeddings=False,
    )
    image_processor = Gemma3ImageProcessorPil(
        size={"height": vision.image_size, "width": vision.image_size},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    processor = Gemma3Processor(
        image_processor=image_processor, tokenizer=tok, chat_template=tok.chat_template, image_seq_length=n_tokens
    )
    model = finish(Gemma3ForConditionalGeneration, config, ov, seed, attn)
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

    tok = tiny_tokenizer(family, padding_side=padding_side)
    smol = family == "smolvlm"
    vkw = vision_kwargs(ov)
    vision: Any = (T.SmolVLMVisionConfig if smol else T.Idefics3VisionConfig)(**vkw)
    scale = 2
    n_tokens = (vision.image_size // vision.patch_size) ** 2 // scale**2
    config = (T.SmolVLMConfig if smol else T.Idefics3Config)(
        vision_config=vision,
        text_config=T.LlamaConfig(**text_kwargs(tok, ov)),
        scale_factor=scale,
        image_token_id=tok.image_token_id,
    )
    image_kwargs: dict[str, Any] = dict(
        size={"longest_edge": 3 * vision.image_size},
        max_image_size={"longest_edge": vision.image_size},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    if smol:
        processor = smolvlm_processor(
            image_processor=T.SmolVLMImageProcessorPil(**image_kwargs),
            tokenizer=tok,
            image_seq_len=n_tokens,
            chat_template=tok.chat_template,
        )
        model_cls: Any = T.SmolVLMForConditionalGeneration
    else:
        processor = T.Idefics3Processor(
            image_processor=T.Idefics3ImageProcessorPil(**image_kwargs),
            tokenizer=tok,
            image_seq_len=n_tokens,
            chat_template=tok.chat_template,
        )
        model_cls = T.Idefics3ForConditionalGeneration
    return finish(model_cls, config, ov, seed, attn), processor


def _internvl(family, seed, attn, padding_side, ov):
    """InternVL 3 / 3.5 (transformers format): an image is cropped into 1..6 tiles of 32x32 nearest its aspect
    ratio, plus a thumbnail when there are several; each tile is 4x4 patches, pixel-shuffled (0.5) into 4
    tokens, between <img> and </img>."""
    import transformers as T

    tok = tiny_tokenizer("internvl", padding_side=padding_side)
    vkw: dict[str, Any] = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=[CLIP_IMAGE, CLIP_IMAGE],
        patch_size=[CLIP_PATCH, CLIP_PATCH],
    )
    vkw.update(ov.pop("vision_config", {}))
    vision: Any = T.InternVLVisionConfig(**vkw)
    n_tokens = (vision.image_size[0] // vision.patch_size[0]) ** 2 // 4
    config = T.InternVLConfig(
        vision_config=vision,
        text_config=T.Qwen2Config(**text_kwargs(tok, ov)),
        image_token_id=tok.context_image_token_id,
        image_seq_length=n_tokens,
        downsample_ratio=0.5,
        tie_word_embeddings=False,
    )
    image_processor = T.GotOcr2ImageProcessorPil(
        size={"height": vision.image_size[0], "width": vision.image_size[1]},
        crop_to_patches=True,
        min_patches=1,
        max_patches=6,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    processor = processor_without_video(
        T.InternVLProcessor, image_processor=image_processor, tokenizer=tok, image_seq_length=n_tokens
    )
    return finish(T.InternVLForConditionalGeneration, config, ov, seed, attn), processor


def _mllama(family, seed, attn, padding_side, ov):
    """Llama-3.2-Vision: 3 text layers, layer 1 a cross-attention layer; an image is 1..4 tiles of 32x32
    (4x4 patches + CLS each), cross-attended by the text tokens its ``cross_attention_mask`` allows. The
    gates (zero-initialised by transformers: the images would not matter) are random, from the seed."""
    import transformers as T

    tok = tiny_tokenizer("mllama", padding_side=padding_side)
    text = text_kwargs(tok, ov)
    text["num_hidden_layers"] = max(text["num_hidden_layers"], 3)
    text.setdefault("cross_attention_layers", [1])
    text.pop("tie_word_embeddings")
    vkw: dict[str, Any] = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_global_layers=1,
        attention_heads=2,
        image_size=CLIP_IMAGE,
        patch_size=CLIP_PATCH,
        max_num_tiles=4,
        intermediate_layers_indices=[0],
        supported_aspect_ratios=[[1, 1], [1, 2], [1, 3], [1, 4], [2, 1], [2, 2], [3, 1], [4, 1]],
    )
    vkw["vision_output_dim"] = vkw["hidden_size"] * (len(vkw["intermediate_layers_indices"]) + 1)
    vkw.update(ov.pop("vision_config", {}))
    config = T.MllamaConfig(
        vision_config=T.MllamaVisionConfig(**vkw),
        text_config=T.MllamaTextConfig(**text),
        image_token_index=tok.image_token_id,
    )
    image_processor = T.MllamaImageProcessorPil(
        size={"height": CLIP_IMAGE, "width": CLIP_IMAGE},
        max_image_tiles=4,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    processor = T.MllamaProcessor(image_processor=image_processor, tokenizer=tok, chat_template=tok.chat_template)
    model = finish(T.MllamaForConditionalGeneration, config, ov, seed, attn)
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

    tok = tiny_tokenizer("gemma4", padding_side=padding_side)
    text = text_kwargs(tok, ov)
    head_dim = text["hidden_size"] // text["num_attention_heads"]
    for key, value in dict(
        head_dim=head_dim,
        global_head_dim=head_dim,
        sliding_window=GEMMA3_SLIDING_WINDOW,
        vocab_size_per_layer_input=text["vocab_size"],
        hidden_size_per_layer_input=8,
        use_bidirectional_attention="vision",
    ).items():
        text.setdefault(key, value)
    text.setdefault(
        "layer_types",
        ["sliding_attention", "full_attention"] * (text["num_hidden_layers"] // 2)
        + ["full_attention"] * (text["num_hidden_layers"] % 2),
    )
    vision: dict[str, Any] = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=16,
        patch_size=8,
        pooling_kernel_size=2,
        position_embedding_size=256,
    )
    vision.update(ov.pop("vision_config", {}))
    config = T.Gemma4Config(
        text_config=text,
        vision_config=vision,
        audio_config=None,
        boi_token_id=tok.boi_token_id,
        eoi_token_id=tok.eoi_token_id,
        image_token_id=tok.image_token_id,
        video_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    image_processor = T.Gemma4ImageProcessorPil(
        patch_size=vision["patch_size"], max_soft_tokens=70, pooling_kernel_size=vision["pooling_kernel_size"]
    )
    processor = gemma4_processor_class()(
        image_processor=image_processor, tokenizer=tok, chat_template=tok.chat_template, image_seq_length=70
    )
    config.video_token_id = processor.video_token_id
    return finish(T.Gemma4ForConditionalGeneration, config, ov, seed, attn), processor
