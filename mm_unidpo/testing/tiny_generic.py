"""Tiny builders of image-text-to-text models that no family file claims, served by the generic family
(mm_unidpo/models/families/generic.py): Aya-Vision and DeepSeek-VL."""

from __future__ import annotations

from typing import Any

import transformers as T

from .tiny_common import CLIP_IMAGE, CLIP_PATCH, finish, siglip_vision, text_kwargs
from .tokenizer import tiny_tokenizer


def _aya_vision(family, seed, attn, padding_side, ov):
    """Aya-Vision: a Cohere-2 language model (layer 0 sliding-window, layer 1 global); an image is cropped into
    1..4 tiles of 32x32 plus a global view, each 4x4 SigLIP patches pixel-shuffled (2) into 4 tokens."""
    tok = tiny_tokenizer("aya_vision", padding_side=padding_side)
    vision = siglip_vision(ov)
    text = text_kwargs(tok, ov)
    text.setdefault("sliding_window", 16)
    text.setdefault("layer_types", ["sliding_attention", "full_attention"][: text["num_hidden_layers"]])
    downsample = 2
    config = T.AyaVisionConfig(
        vision_config=vision,
        text_config=T.Cohere2Config(**text),
        downsample_factor=downsample,
        image_token_index=tok.convert_tokens_to_ids("<|IMG_PATCH|>"),
        tie_word_embeddings=False,
    )
    image_processor = T.GotOcr2ImageProcessorPil(
        size={"height": CLIP_IMAGE, "width": CLIP_IMAGE},
        crop_to_patches=True,
        min_patches=1,
        max_patches=4,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    processor = T.AyaVisionProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=CLIP_PATCH,
        img_size=CLIP_IMAGE,
        downsample_factor=downsample,
        chat_template=tok.chat_template,
    )
    return finish(T.AyaVisionForConditionalGeneration, config, ov, seed, attn), processor


def _deepseek_vl(family, seed, attn, padding_side, ov):
    """DeepSeek-VL: a Llama language model; an image is padded to a square, resized to 32x32 and becomes its
    16 SigLIP patch features (4x4), through a two-layer aligner."""
    tok = tiny_tokenizer("deepseek_vl", padding_side=padding_side)
    vision = siglip_vision(ov)
    n_tokens = (vision.image_size // vision.patch_size) ** 2
    config = T.DeepseekVLConfig(
        vision_config=vision,
        text_config=T.LlamaConfig(**text_kwargs(tok, ov)),
        image_token_id=tok.convert_tokens_to_ids("<image_placeholder>"),
        tie_word_embeddings=False,
    )
    image_processor = T.DeepseekVLImageProcessorPil(
        size={"height": CLIP_IMAGE, "width": CLIP_IMAGE}, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5]
    )
    processor = T.DeepseekVLProcessor(
        image_processor=image_processor, tokenizer=tok, chat_template=tok.chat_template, num_image_tokens=n_tokens
    )
    return finish(T.DeepseekVLForConditionalGeneration, config, ov, seed, attn), processor


BUILDERS: dict[str, Any] = {"aya_vision": _aya_vision, "deepseek_vl": _deepseek_vl}
