"""The original LLaVA code (``llava-torch``, haotian-liu/LLaVA): ``LlavaLlamaForCausalLM``, config
``model_type == "llava_llama"``, as in the liuhaotian/llava-v1.5-* checkpoints.

It differs from the transformers LLaVA classes in three ways, all handled here:

* Prompts are rendered with LLaVA's own conversation templates (``llava.conversation.conv_templates``,
  ``"vicuna_v1"`` for LLaVA-1.5: ``"<system> USER: <image>\\n... ASSISTANT: <answer></s>"``), not a
  tokenizer chat template (the original checkpoints have none).
* Each ``<image>`` is ONE token id (``IMAGE_TOKEN_INDEX`` = -200) that the model replaces with
  ``num_image_tokens`` projected vision features. So the prompt length that counts against
  ``max_length`` is the *expanded* one, and the logits come over the expanded sequence: they do not
  line up with ``input_ids``. We splice with the model's own ``prepare_inputs_labels_for_multimodal``
  (which carries the labels along) and gather the log-probs with the spliced labels.
* After splicing, LLaVA re-pads on ``config.tokenizer_padding_side`` (whatever side we padded on) and
  truncates to ``config.tokenizer_model_max_length``. ``max_length`` is capped at that limit, so the
  spliced sequences always fit and LLaVA never cuts anything (checked on every forward).

It plugs into every layout through one hook, `model_inputs`: LLaVA splices the image features into the
prompts alone (its own ``prepare_inputs_labels_for_multimodal``), and the rows are rebuilt from
embeddings with the same blocks in the same order (`Blocks.resized`). Its forward takes no attention
keywords, so packed rows get the dense block mask; no varlen layout.

A row without an image in a batch with images gets a zero dummy image, as LLaVA's own training data
collator does: ``prepare_inputs_labels_for_multimodal`` consumes one image per image-less row (and
uses none of its features). Only the "pad" / "square" image modes with "flat" feature merging
(LLaVA-1.5) are supported; LLaVA-1.6 "anyres" checkpoints are refused (use the llava-hf conversion with
the ``llava_next`` family).

``llava`` is imported only when this family is used.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from transformers import StoppingCriteriaList, StopStringCriteria

from mm_unidpo.data.records import IMAGE_PLACEHOLDER, BadRecordError, Message, PreferenceRecord

from ..layouts.blocks import Blocks, PairBatch, pad_rows
from ..utils import to_model_inputs, unwrap_model
from .base import Family, FamilySpec
from .llava_orig_processor import DEFAULT_CONV_MODE, load_llava_orig, num_image_tokens

logger = logging.getLogger(__name__)


class LlavaOrig(Family):
    spec = FamilySpec(
        "llava_orig",
        model_types=("llava_llama",),
        loader=load_llava_orig,
        vision_modules=("vision_tower",),
        projector_modules=("mm_projector",),
        layouts=("plain", "packed"),
        packed_attention=False,  # its forward takes no extra keywords
        takes_logits_to_keep=False,
    )

    def __init__(self, model: Any, processor: Any, *, conv_mode: str | None = None, max_length: int | None = None):
        super().__init__(model, processor)
        # llava-torch is optional and heavy: imported only when this family is used (here and below).
        from llava.constants import IMAGE_TOKEN_INDEX as llava_image_index
        from llava.conversation import conv_templates

        config = model.config
        self.conv_mode = conv_mode or getattr(processor, "conv_mode", None) or DEFAULT_CONV_MODE
        if self.conv_mode not in conv_templates:
            raise ValueError(f"unknown LLaVA conversation mode {self.conv_mode!r}; known: {', '.join(conv_templates)}")
        aspect = getattr(config, "image_aspect_ratio", "square")
        merge = getattr(config, "mm_patch_merge_type", "flat")
        if aspect == "anyres" or merge != "flat":
            raise NotImplementedError(
                f"llava_orig supports LLaVA-1.5 style checkpoints (image_aspect_ratio 'pad'/'square', "
                f"mm_patch_merge_type 'flat'); this one has {aspect!r} / {merge!r} (LLaVA-1.6 anyres), whose "
                f"image token count varies per image. Use its llava-hf conversion with the llava_next family."
            )
        self.image_token_index = getattr(processor, "image_token_index", llava_image_index)
        self.num_image_tokens = num_image_tokens(model)
        given = getattr(processor, "num_image_tokens", None)
        if given is not None and given != self.num_image_tokens:
            raise ValueError(
                f"the processor says {given} tokens per image but the model's vision tower makes "
                f"{self.num_image_tokens}"
            )
        self.use_im_start_end = bool(getattr(config, "mm_use_im_start_end", False))
        self.max_positions = getattr(config, "tokenizer_model_max_length", None)

    def max_length(self, wanted: int) -> int:
        """LLaVA cuts a spliced sequence at tokenizer_model_max_length: no longer sequences."""
        if self.max_positions is not None and wanted > self.max_positions:
            logger.warning(
                "llava_orig: max_length %d is above the model's tokenizer_model_max_length %d, at which "
                "LLaVA cuts the spliced sequence; using %d",
                wanted,
                self.max_positions,
                self.max_positions,
            )
            return int(self.max_positions)
        return wanted

    # ---- rendering with llava.conversation ------------------------------------------------------------

    def messages(self, prompt: str | list[Message], record: Any = None) -> list[Message]:
        """Chat messages with text content (verbatim for string prompts, as in LLaVA's data files), checked to
        be what a LLaVA conversation can hold: an optional system message, then user / assistant turns
        alternating from a user turn and ending with one."""
        if isinstance(prompt, str):
            return [{"role": "user", "content": prompt}]
        out = [{"role": m.get("role", "user"), "content": _content_text(m.get("content"))} for m in prompt]
        turns = out[1:] if out and out[0]["role"] == "system" else out
        for i, m in enumerate(turns):
            expected = "user" if i % 2 == 0 else "assistant"
            if m["role"] != expected:
                raise BadRecordError(
                    record,
                    "bad_prompt",
                    f"message {i + len(out) - len(turns)} has role {m['role']!r} where the LLaVA "
                    f"conversation expects {expected!r} (an optional system message, then user and "
                    f"assistant turns alternating, ending with a user turn)",
                )
        if not turns or turns[-1]["role"] != "user":
            raise BadRecordError(record, "bad_prompt", "the prompt must end with a user turn")
        return out

    def render(self, messages: list[Message], response: str | None) -> str:
        from llava.constants import DEFAULT_IM_END_TOKEN, DEFAULT_IM_START_TOKEN  # optional: see __init__
        from llava.conversation import conv_templates

        conv = conv_templates[self.conv_mode].copy()
        for m in messages:
            text = m["content"] if isinstance(m["content"], str) else _content_text(m["content"])
            if self.use_im_start_end:
                text = text.replace(
                    IMAGE_PLACEHOLDER, DEFAULT_IM_START_TOKEN + IMAGE_PLACEHOLDER + DEFAULT_IM_END_TOKEN
                )
            if m["role"] == "system":
                conv.system = text
            else:
                conv.append_message(conv.roles[0] if m["role"] == "user" else conv.roles[1], text)
        conv.append_message(conv.roles[1], response)
        return conv.get_prompt()

    def check_response(self, name: str, content: str, record: Any) -> None:
        if IMAGE_PLACEHOLDER in content:
            raise BadRecordError(
                record,
                "placeholder_mismatch",
                f"the {name} response contains {IMAGE_PLACEHOLDER!r}, which LLaVA would replace with image features",
            )

    # ---- tokenizing -------------------------------------------------------------------------------

    def tokenize_prompt(self, text: str, images: list, record: Any = None) -> tuple[list[int], dict, dict]:
        """Prompt ids (each ``<image>`` one id, -200) and ``{"images", "image_sizes"}`` for its images."""
        try:
            out = self.processor(text=[text], images=images or None)
        except ValueError as error:
            raise BadRecordError(record, "placeholder_mismatch", str(error)) from None
        vision: dict[str, torch.Tensor] = {}
        if images:
            pixels = out["images"]
            if isinstance(pixels, list):  # only "anyres" gives per-image shapes, refused in __init__
                pixels = torch.stack(pixels)
            vision = {"images": pixels, "image_sizes": torch.tensor(out["image_sizes"], dtype=torch.long)}
        return out["input_ids"][0].tolist(), vision, {}

    def prompt_positions(self, prompt_ids: list[int]) -> int:
        """Every ``<image>`` id counted as the features it becomes."""
        return len(prompt_ids) + prompt_ids.count(self.image_token_index) * (self.num_image_tokens - 1)

    def response_ids(
        self, prompt_text: str, prompt_ids: list[int], text: str, content: str | None, record: PreferenceRecord | None
    ) -> list[int]:
        """The response's tokens as LLaVA's training tokenizes them: the whole conversation at once, minus the
        prompt's tokens (the response alone if the prompt is not a token prefix). A response holding
        special-token text ("</s>") is tokenized alone, that text as plain text (the default hook)."""
        if content is not None and any(t in content for t in self.special_token_texts):
            return super().response_ids(prompt_text, prompt_ids, text, content, record)
        from llava.mm_utils import tokenizer_image_token  # optional: see __init__

        full = tokenizer_image_token(prompt_text + text, self.tokenizer, self.image_token_index)
        if full[: len(prompt_ids)] == prompt_ids:
            return self.ended(list(full[len(prompt_ids) :]))
        return self.ended(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def what_counts(self, prompt_ids: list[int]) -> str:
        return f"{prompt_ids.count(self.image_token_index)} image(s) of {self.num_image_tokens} tokens included"

    # ---- the forward ----------------------------------------------------------------------------------

    def stack_vision(self, per_block: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """All images of the blocks in order; an image-less block gets one zero image (see module doc)."""
        with_images = [v for v in per_block if "images" in v]
        if not with_images:
            return {}
        shape = with_images[0]["images"].shape[1:]
        dummy = {
            "images": torch.zeros((1, *shape), dtype=with_images[0]["images"].dtype),
            "image_sizes": torch.tensor([[shape[-1], shape[-2]]], dtype=torch.long),
        }
        rows = [v if "images" in v else dummy for v in per_block]
        return {k: torch.cat([v[k] for v in rows]) for k in ("images", "image_sizes")}

    def model_inputs(self, model: Any, batch: PairBatch) -> tuple[dict[str, Any], Blocks]:
        """The splice hook: LLaVA splices image features into the prompts alone; the rows are rebuilt from
        embeddings over the blocks resized to the spliced prompts."""
        base = unwrap_model(model)
        embed = base.get_model().embed_tokens
        prompt_ids, prompt_mask, _ = batch.prompts()
        images = batch.vision.get("images")
        if images is None:
            prompts = [embed(prompt_ids[i][prompt_mask[i].bool()]) for i in range(prompt_ids.shape[0])]
        else:
            projector = base.get_model().mm_projector
            images = images.to(device=prompt_ids.device, dtype=next(projector.parameters()).dtype)
            _, _, spliced_mask, _, spliced, _ = base.prepare_inputs_labels_for_multimodal(
                prompt_ids, None, prompt_mask, None, None, images, None
            )
            prompts = [spliced[i][spliced_mask[i].bool()] for i in range(prompt_ids.shape[0])]
        lengths = [x.shape[0] for x in prompts]
        expected = [
            self.prompt_positions(prompt_ids[i][prompt_mask[i].bool()].tolist()) for i in range(prompt_ids.shape[0])
        ]
        if lengths != expected:
            raise RuntimeError(
                f"LLaVA's splicing gave prompts of {lengths} positions, expected {expected}: "
                f"was a prompt cut at tokenizer_model_max_length?"
            )
        blocks = batch.blocks.resized(lengths)
        inputs_embeds = prompts[0].new_zeros((blocks.num_rows, blocks.width, prompts[0].shape[-1]))
        for prompt, new, old in zip(prompts, blocks.blocks, batch.blocks.blocks):
            inputs_embeds[new.row, new.offset : new.offset + new.prompt] = prompt
            inputs_embeds[new.row, new.offset + new.prompt : new.end] = embed(
                batch.input_ids[old.row, old.offset + old.prompt : old.end]
            )
        return {"input_ids": None, "inputs_embeds": inputs_embeds}, blocks

    @torch.no_grad()
    def generate(
        self, model: Any, prompts: list[str], images: list[list[Any]], *, device: Any = None, **settings: Any
    ) -> Any:
        """Through LLaVA's own ``generate(inputs, images, image_sizes)``, which splices the image features in
        and decodes from embeddings (so it returns the new tokens only). Rows without an image in a batch
        with images get LLaVA's zero dummy image (see module doc)."""
        per_row = [self.tokenize_prompt(text, row) for text, row in zip(prompts, images)]
        lengths = [self.prompt_positions(ids) for ids, _, _ in per_row]
        base = unwrap_model(model)
        if self.max_positions is not None and max(lengths) > self.max_positions:
            row = max(range(len(lengths)), key=lengths.__getitem__)
            raise ValueError(
                f"prompt {row} takes {lengths[row]} positions with its image features and LLaVA cuts "
                f"at tokenizer_model_max_length={self.max_positions}: shorten it"
            )
        input_ids, attention_mask = pad_rows([ids for ids, _, _ in per_row], self.pad_token_id, "left")
        inputs: dict[str, Any] = {
            "inputs": input_ids,
            "attention_mask": attention_mask,
            **self.stack_vision([vision for _, vision, _ in per_row]),
        }
        inputs = to_model_inputs(inputs, model, device)
        if "image_sizes" in inputs:
            inputs["image_sizes"] = inputs["image_sizes"].tolist()
        settings.setdefault("pad_token_id", self.pad_token_id)
        settings.setdefault("eos_token_id", sorted(self.end_token_ids))
        if settings.get("stop_strings"):
            # LLaVA's forward takes no **kwargs, and generate() hands `tokenizer` on to it: pass the
            # stop-string criterion built here instead.
            criterion = StopStringCriteria(
                settings.pop("tokenizer", None) or self.tokenizer, settings.pop("stop_strings")
            )
            settings["stopping_criteria"] = StoppingCriteriaList([*settings.get("stopping_criteria", []), criterion])
        with _padding_side(base.config, "left"), cache_keyword_compat(base):  # LLaVA re-pads spliced rows on this side
            return model.generate(**inputs, **settings)


def _content_text(content: Any) -> str:
    """A message's content as LLaVA text: string content verbatim; parts in order, each image as "<image>\\n"
    on its own line, text parts concatenated."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    text = ""
    for part in content:
        if part.get("type") == "image":
            if text and not text.endswith("\n"):
                text += "\n"
            text += IMAGE_PLACEHOLDER + "\n"
        elif part.get("type") == "text":
            text += part.get("text", "")
    return text


@contextmanager
def cache_keyword_compat(model: Any) -> Iterator[None]:
    """Since transformers 5.24 generation hands the KV cache to ``forward`` as ``cache=`` (it was
    ``past_key_values=``), and llava-torch's ``LlavaLlamaForCausalLM.forward`` knows only the old name
    (which it passes on to Llama's forward, where transformers maps it to ``cache``). While generating,
    the instance's forward takes ``cache`` under its old name; older transformers pass no ``cache``."""
    if "cache" in inspect.signature(model.forward).parameters:
        yield
        return
    own = model.__dict__.get("forward")  # e.g. accelerate's device-map hook wraps forward on the instance
    inner = model.forward

    def forward(*args: Any, cache: Any = None, **kwargs: Any) -> Any:
        if cache is not None:
            kwargs["past_key_values"] = cache
        return inner(*args, **kwargs)

    # generate() validates its kwargs against forward's signature: keep every old parameter, add `cache`.
    params = list(inspect.signature(inner).parameters.values())
    at = next((i for i, q in enumerate(params) if q.kind is inspect.Parameter.VAR_KEYWORD), len(params))
    params.insert(at, inspect.Parameter("cache", inspect.Parameter.KEYWORD_ONLY, default=None))
    forward.__signature__ = inspect.signature(inner).replace(parameters=params)  # type: ignore[attr-defined]
    model.forward = forward
    try:
        yield
    finally:
        if own is None:
            del model.forward
        else:
            model.forward = own


@contextmanager
def _padding_side(config: Any, side: str) -> Iterator[None]:
    saved = getattr(config, "tokenizer_padding_side", "right")
    config.tokenizer_padding_side = side
    try:
        yield
    finally:
        config.tokenizer_padding_side = saved
