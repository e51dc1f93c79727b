"""The original LLaVA code's processor and loader (``llava-torch``): what
``llava.model.builder.load_pretrained_model`` and LLaVA's scripts build, as one processor object.
The adapter that scores and generates with them is :mod:`.llava_orig`."""

from __future__ import annotations

import os
from typing import Any

import torch
from transformers import AutoTokenizer

from mm_unidpo.data.records import IMAGE_PLACEHOLDER

from ..layouts.blocks import pad_rows
from ..utils import unwrap_model

__all__ = ["DEFAULT_CONV_MODE", "LlavaOrigProcessor", "load_llava_orig", "num_image_tokens"]

DEFAULT_CONV_MODE = "vicuna_v1"


def num_image_tokens(model: Any) -> int:
    """Vision features one image becomes, from the model's vision tower (no weights needed)."""
    tower = unwrap_model(model).get_vision_tower()
    extra = 1 if getattr(tower, "select_feature", "patch") == "cls_patch" else 0
    return int(tower.num_patches) + extra


class LlavaOrigProcessor:
    """Processor for the original LLaVA code: a tokenizer, the vision tower's ``CLIPImageProcessor`` and
    the conversation template name (a key of ``llava.conversation.conv_templates``).

    Calling it does what LLaVA's scripts do: ``process_images`` (per ``model_config.image_aspect_ratio``)
    and ``tokenizer_image_token`` (each ``<image>`` becomes one ``image_token_index`` id, -200).
    """

    image_token = IMAGE_PLACEHOLDER

    def __init__(
        self,
        tokenizer: Any,
        image_processor: Any,
        model_config: Any,
        num_image_tokens: int,
        conv_mode: str = DEFAULT_CONV_MODE,
    ):
        from llava.constants import IMAGE_TOKEN_INDEX as llava_index  # llava-torch: optional, imported on use

        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.model_config = model_config
        self.num_image_tokens = num_image_tokens
        self.conv_mode = conv_mode
        self.image_token_index = llava_index
        # Real LLaVA tokenizers have no chat template; name the conversation template instead, so that a
        # fingerprint of the processor's template still changes when the conversation format does.
        self.chat_template = (
            getattr(tokenizer, "chat_template", None) or f"llava.conversation.conv_templates[{conv_mode!r}]"
        )

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
        rows = [tokenizer_image_token(t, self.tokenizer, self.image_token_index) for t in texts]
        n_img = sum(t.count(self.image_token) for t in texts)
        if n_img != (len(images) if images is not None else 0):
            raise ValueError(
                f"{n_img} {self.image_token} placeholders but {0 if images is None else len(images)} images"
            )
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        ids, mask = pad_rows([list(r) for r in rows], pad, "left" if self.tokenizer.padding_side == "left" else "right")
        out: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
        if images:
            out["images"] = self.process_images(images)
            out["image_sizes"] = [im.size for im in images]
        return out

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Save the tokenizer and the image processor (the conversation mode is not saved: pass it again)."""
        self.tokenizer.save_pretrained(path)
        self.image_processor.save_pretrained(path)


_HUB_KEYS = ("revision", "token", "cache_dir", "local_files_only", "force_download", "proxies", "subfolder")


def load_llava_orig(
    name_or_path: str, *, conv_mode: str = DEFAULT_CONV_MODE, **kwargs: Any
) -> tuple[Any, LlavaOrigProcessor]:
    """(model, processor) for an original LLaVA checkpoint (e.g. liuhaotian/llava-v1.5-7b), as
    ``llava.model.builder.load_pretrained_model`` builds them: the tokenizer, ``LlavaLlamaForCausalLM``,
    the extra image tokens the config asks for, and the CLIP vision tower loaded by LLaVA's own
    ``load_model()`` (from ``config.mm_vision_tower``) in the projector's dtype and device.

    ``kwargs`` go to ``from_pretrained`` (dtype, use_safetensors, attn_implementation, device_map,
    quantization_config, revision...); ``trust_remote_code`` is ignored (the LLaVA code is a local package).
    """
    from llava.constants import DEFAULT_IM_END_TOKEN, DEFAULT_IM_START_TOKEN, DEFAULT_IMAGE_PATCH_TOKEN
    from llava.model.language_model.llava_llama import LlavaLlamaForCausalLM

    kwargs.pop("trust_remote_code", None)
    hub = {k: kwargs[k] for k in _HUB_KEYS if k in kwargs}
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, **hub)
    try:
        model = LlavaLlamaForCausalLM.from_pretrained(name_or_path, **kwargs)
    except OSError as error:
        if kwargs.get("use_safetensors") and "safetensors" in str(error):
            raise OSError(
                f"{name_or_path}: no safetensors weights ({error}). The original LLaVA checkpoints "
                f"(liuhaotian/llava-v1.5-*) ship PyTorch .bin files only: convert them once with "
                f"`mm-unidpo convert {name_or_path} --out DIR` (tensors only, nothing in the files runs) "
                f"and load DIR, or set model.allow_bin_weights: true to load the .bin files with "
                f"torch.load(weights_only=True)"
            ) from error
        raise
    config = model.config
    # As load_pretrained_model: the tokens the checkpoint was trained with (LLaVA-1.5: none).
    added = []
    if getattr(config, "mm_use_im_patch_token", True):
        added.append(DEFAULT_IMAGE_PATCH_TOKEN)
    if getattr(config, "mm_use_im_start_end", False):
        added += [DEFAULT_IM_START_TOKEN, DEFAULT_IM_END_TOKEN]
    if added:
        tokenizer.add_tokens(added, special_tokens=True)
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    if tokenizer.pad_token is None:  # LLaVA's v1 training sets pad = unk
        tokenizer.pad_token = tokenizer.unk_token if tokenizer.unk_token is not None else tokenizer.eos_token

    tower = model.get_vision_tower()
    if tower is None:
        raise ValueError(f"{name_or_path}: the config names no vision tower (mm_vision_tower)")
    if not tower.is_loaded:
        tower.load_model(device_map=kwargs.get("device_map"))
    projector = next(model.get_model().mm_projector.parameters())
    tower.to(device=projector.device, dtype=projector.dtype)
    processor = LlavaOrigProcessor(tokenizer, tower.image_processor, config, num_image_tokens(model), conv_mode)
    return model, processor
