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

The processor is :class:`LlavaOrigProcessor`: ``.tokenizer`` (vicuna_v1 chat template, pad =
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
from typing import Any

import torch

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


@functools.lru_cache(maxsize=None)
def _vision_tower_dir(vision_config_json: str, seed: int) -> str:
    from transformers import CLIPImageProcessorPil, CLIPVisionConfig, CLIPVisionModel

    cfg = CLIPVisionConfig(**json.loads(vision_config_json))
    path = tempfile.mkdtemp(prefix="mm_unidpo_tiny_clip_")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    torch.manual_seed(seed)
    with _quiet_progress_bars():
        CLIPVisionModel(cfg).save_pretrained(path)
    size = cfg.image_size
    CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size}).save_pretrained(path)
    return path


class LlavaOrigProcessor:
    """Minimal processor for the original LLaVA code (see module doc)."""

    image_token = "<image>"

    def __init__(self, tokenizer, image_processor, model_config, num_image_tokens: int, conv_mode: str = "vicuna_v1"):
        from llava.constants import IMAGE_TOKEN_INDEX

        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.model_config = model_config
        self.num_image_tokens = num_image_tokens
        self.conv_mode = conv_mode
        self.image_token_index = IMAGE_TOKEN_INDEX
        self.chat_template = tokenizer.chat_template

    def apply_chat_template(self, messages, **kwargs):
        return self.tokenizer.apply_chat_template(messages, **kwargs)

    def process_images(self, images) -> torch.Tensor | list[torch.Tensor]:
        from llava.mm_utils import process_images

        return process_images([im.convert("RGB") for im in images], self.image_processor, self.model_config)

    def __call__(self, text: str | list[str], images=None, padding: bool = True, return_tensors: str = "pt"):
        """Tokenize ``text`` (``<image>`` -> -200) and preprocess ``images`` (flat list, in order).

        Returns ``{"input_ids", "attention_mask", "images", "image_sizes"}`` (``images`` and
        ``image_sizes`` only with images); rows are padded on ``tokenizer.padding_side``.
        """
        from llava.mm_utils import tokenizer_image_token

        texts = [text] if isinstance(text, str) else list(text)
        rows = [tokenizer_image_token(t, self.tokenizer) for t in texts]
        n_img = sum(t.count(self.image_token) for t in texts)
        if n_img != (len(images) if images is not None else 0):
            raise ValueError(f"{n_img} {self.image_token} placeholders but {0 if images is None else len(images)} images")
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            sl = slice(width - len(r), width) if self.tokenizer.padding_side == "left" else slice(0, len(r))
            ids[i, sl] = torch.tensor(r, dtype=torch.long)
            mask[i, sl] = 1
        out: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
        if images:
            out["images"] = self.process_images(images)
            out["image_sizes"] = [im.size for im in images]
        return out


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
        mm_vision_tower=tower, mm_hidden_size=vision.hidden_size, mm_projector_type="mlp2x_gelu",
        mm_vision_select_layer=-2, mm_vision_select_feature="patch", mm_patch_merge_type="flat",
        image_aspect_ratio="pad", mm_use_im_start_end=False, mm_use_im_patch_token=False, use_mm_proj=True,
        tokenizer_padding_side=padding_side, tokenizer_model_max_length=tok.model_max_length,
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
