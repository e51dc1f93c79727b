"""What the tiny model builders share: sizes, the text config, CLIP / SigLIP vision towers, construction."""

from __future__ import annotations

from typing import Any

import torch

HIDDEN, INTERMEDIATE, LAYERS, HEADS, KV_HEADS = 64, 128, 2, 4, 2  # head_dim 16
CLIP_IMAGE, CLIP_PATCH = 32, 8  # 4x4 = 16 patch features per tile
PINPOINTS = [[32, 32], [32, 64], [64, 32]]  # anyres grids (height, width): 1x1, 1x2, 2x1 tiles


def round_up(n: int, m: int = 64) -> int:
    return (n + m - 1) // m * m


def text_kwargs(tok, ov: dict[str, Any]) -> dict[str, Any]:
    kw: dict[str, Any] = dict(
        vocab_size=ov.pop("vocab_size", round_up(len(tok))),
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


def vision_kwargs(ov: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A 2-layer, width-32 vision tower on 32-pixel images in 8-pixel patches, with `ov`'s vision_config."""
    kw: dict[str, Any] = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=CLIP_IMAGE,
        patch_size=CLIP_PATCH,
        **extra,
    )
    kw.update(ov.pop("vision_config", {}))
    return kw


def clip_vision(ov: dict[str, Any]):
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(**vision_kwargs(ov, projection_dim=32))


def finish(model_cls, config, ov: dict[str, Any], seed: int, attn: str):
    for key, value in ov.items():
        setattr(config, key, value)
    torch.manual_seed(seed)
    model = model_cls._from_config(config, attn_implementation=attn, dtype=torch.float32)
    return model


def siglip_vision(ov: dict[str, Any]):
    from transformers import SiglipVisionConfig

    return SiglipVisionConfig(**vision_kwargs(ov))


GEMMA3_SLIDING_WINDOW = 16  # shorter than every test sequence: the sliding layer's window is exercised
