"""Tiny original-LLaVA (``llava-torch``, haotian-liu/LLaVA) model, built offline.

Only imported by ``tiny("llava_orig")``, so ``llava`` is not needed for the other families.

The original code loads its vision tower by name: ``LlavaMetaModel.__init__`` calls
``build_vision_tower(config, delay_load=True)``, which accepts an existing local path (or an
``openai/...``/``laion/...`` hub name) and reads ``CLIPVisionConfig.from_pretrained(path)``;
``CLIPVisionTower.load_model()`` then loads ``CLIPImageProcessor`` and ``CLIPVisionModel``
``.from_pretrained(path)``.  To stay offline we save a random-weight tiny ``CLIPVisionModel``
(seeded) plus its image-processor config into a per-process temporary directory, point
``config.mm_vision_tower`` at it and call LLaVA's own ``load_model()`` -- the same code path as
a real checkpoint (``llava.model.builder.load_pretrained_model``).  The directory is removed at
interpreter exit, so a saved tiny checkpoint's ``mm_vision_tower`` is only valid in-process.

The processor is :class:`mm_unidpo.models.families.llava_orig_processor.LlavaOrigProcessor` (also what
``load_llava_orig`` builds for real checkpoints): ``.tokenizer`` (vicuna_v1 chat template, pad =
unk as in LLaVA's training), ``.image_processor`` (the tower's ``CLIPImageProcessor``, PIL
backend), ``.conv_mode = "vicuna_v1"`` (a key of ``llava.conversation.conv_templates``) and a
``__call__`` that does what LLaVA's scripts do (``process_images`` with ``image_aspect_ratio="pad"``
and ``tokenizer_image_token``: each ``<image>`` becomes one ``IMAGE_TOKEN_INDEX`` (-200) id that the
model replaces with ``num_image_tokens`` features).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import shutil
import tempfile

import torch

from mm_unidpo.models.families.llava_orig_processor import LlavaOrigProcessor

from .tokenizer import tiny_tokenizer

__all__ = ["LlavaOrigProcessor", "tiny_llava_orig"]


@contextlib.contextmanager
def _quiet_progress_bars():
    from transformers.utils import logging as hf_logging

    was_disabled = not hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if not was_disabled:
            hf_logging.enable_progress_bar()


@functools.cache
def _vision_tower_dir(vision_config_json: str, seed: int) -> str:
    from transformers import CLIPImageProcessorPil, CLIPVisionConfig, CLIPVisionModel

    cfg = CLIPVisionConfig(**json.loads(vision_config_json))
    path = tempfile.mkdtemp(prefix="mm_unidpo_tiny_clip_")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    torch.manual_seed(seed)
    with _quiet_progress_bars():
        CLIPVisionModel(cfg).save_pretrained(path)
    size: int = cfg.image_size  # type: ignore[assignment]  # an int in our config
    CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size}).save_pretrained(path)
    return path


def tiny_llava_orig(seed, attn, padding_side, text_kwargs, clip_vision, overrides):
    from llava.model.language_model.llava_llama import LlavaConfig, LlavaLlamaForCausalLM

    ov = dict(overrides)
    tok = tiny_tokenizer("vicuna", padding_side=padding_side)
    # vocab == len(tokenizer) as in LLaVA-1.5 (32000): llava.model.builder.load_pretrained_model
    # calls resize_token_embeddings(len(tokenizer)) on load.
    ov.setdefault("vocab_size", len(tok))
    vision = clip_vision(ov)
    tower = _vision_tower_dir(json.dumps(vision.to_diff_dict(), sort_keys=True), seed)
    config = LlavaConfig(
        **text_kwargs(tok, ov),
        mm_vision_tower=tower,
        mm_hidden_size=vision.hidden_size,
        mm_projector_type="mlp2x_gelu",
        mm_vision_select_layer=-2,
        mm_vision_select_feature="patch",
        mm_patch_merge_type="flat",
        image_aspect_ratio="pad",
        mm_use_im_start_end=False,
        mm_use_im_patch_token=False,
        use_mm_proj=True,
        tokenizer_padding_side=padding_side,
        tokenizer_model_max_length=tok.model_max_length,
    )
    for key, value in ov.items():
        setattr(config, key, value)
    torch.manual_seed(seed)
    model = LlavaLlamaForCausalLM._from_config(config, attn_implementation=attn, dtype=torch.float32)
    vt = model.get_vision_tower()
    with _quiet_progress_bars():
        vt.load_model()  # LLaVA's own loader, from the local directory
    vt.to(dtype=torch.float32)
    n_tokens = (vision.image_size // vision.patch_size) ** 2  # "patch" drops CLS
    processor = LlavaOrigProcessor(tok, vt.image_processor, model.config, n_tokens)
    return model, processor
