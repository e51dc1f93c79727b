"""Any other image-text-to-text model (`generic`): a model transformers' AutoModelForImageTextToText loads
whose `model_type` no family file claims (Aya-Vision, DeepSeek-VL, ...), with a chat-templated processor.

Plain layout only, the processor's own chat template and its own outputs, the model's own positions. A
response is what the template writes for the assistant's turn after the prompt: the prompt rendered with
the generation prompt must be a prefix of the prompt + response rendering, in tokens as in text, else the
record is refused (a template that rewrites earlier turns). A model this cannot score exactly is refused
with the reason, never scored approximately:

- no chat template, or one that writes no generation prompt (the assistant's header would be scored);
- a processor that returns a per-token input besides the ids (Gemma-3's ``token_type_ids``): how it
  continues over a response is the model's business, which only a family file can know;
- left padding on a model with 3-D (M-RoPE) positions: its positions cannot be written as 1-D ones.

The vision tower and projector are found by the common module names below (SigLIP towers, LLaVA-style
projectors, DeepSeek-VL's aligner).
"""

from __future__ import annotations

from typing import Any

import torch
from jinja2 import TemplateError
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

from mm_unidpo.data.records import BadRecordError, PreferenceRecord

from ..layouts.blocks import Blocks, PairBatch
from .base import Family, FamilySpec

_PROBE = [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]


class Generic(Family):
    spec = FamilySpec(
        "generic",
        model_types=(),
        vision_modules=("vision_tower", "vision_model", "visual"),
        projector_modules=("multi_modal_projector", "aligner", "mm_projector", "connector", "merger"),
        layouts=("plain",),
    )

    @staticmethod
    def accepts(model_type: str | None) -> bool:
        """An image-text-to-text model type (transformers' AutoModelForImageTextToText mapping)."""
        return model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    def __init__(self, model: Any, processor: Any, **options: Any):
        super().__init__(model, processor, **options)
        config = getattr(model, "config", None)
        self.model_type = getattr(config, "model_type", None)
        self.mrope = "mrope" in str(getattr(getattr(config, "text_config", config), "rope_parameters", ""))
        what = f"model_type={self.model_type!r} (no family file; the generic family)"
        if getattr(processor, "chat_template", None) is None or not hasattr(processor, "apply_chat_template"):
            raise ValueError(
                f"{what}: its processor ({type(processor).__name__}) has no chat template, so the prompt / "
                f"response split cannot be the model's own; give a processor with a chat template (e.g. the "
                f"checkpoint's chat_template.jinja) or add a family file"
            )
        try:
            prompt, full = self.render(_PROBE, None), self.render(_PROBE, "Yes.")
            bare = processor.apply_chat_template(_PROBE, tokenize=False, add_generation_prompt=False)
        except (TemplateError, TypeError, KeyError, IndexError, ValueError) as error:  # raise_exception, ...
            raise ValueError(
                f"{what}: its chat template fails on a one-turn text conversation ({type(error).__name__}: "
                f"{error}); add a family file"
            ) from None
        if prompt == bare:
            raise ValueError(
                f"{what}: its chat template writes no generation prompt, so the assistant's turn header "
                f"cannot be told from the response; add a family file"
            )
        if not full.startswith(prompt) or "Yes." not in full[len(prompt) :]:
            raise ValueError(
                f"{what}: its chat template does not write the prompt then the assistant's response after it "
                f"(prompt {prompt!r}, with a response {full!r}); add a family file"
            )

    def tokenize_prompt(self, text: str, images: list, record: Any) -> tuple[list[int], dict, dict]:
        kwargs = {"images": self.processor_images([images])} if images else {}
        out = self.processor(
            text=[text], return_tensors="pt", add_special_tokens=self.needs_special_tokens(text), **kwargs
        )
        shape = out["input_ids"].shape
        per_token = [
            k
            for k, v in out.items()
            if k not in ("input_ids", "attention_mask") and isinstance(v, torch.Tensor) and v.shape == shape
        ]
        if per_token:
            raise BadRecordError(
                record,
                "unsupported_model",
                f"model_type={self.model_type!r}: the processor returns the per-token input(s) {per_token}, "
                f"which the generic family cannot continue over a response exactly; this model needs a family file",
            )
        skip = ("input_ids", "attention_mask")
        vision = {k: v for k, v in out.items() if k not in skip and isinstance(v, torch.Tensor)}
        return out["input_ids"][0].tolist(), vision, {}

    def response_ids(
        self, prompt_text: str, prompt_ids: list[int], text: str, content: str | None, record: PreferenceRecord | None
    ) -> list[int]:
        """The tokens the whole rendering has after the prompt's: the prompt's own tokens must be a prefix of
        the rendered conversation's (a template or tokenizer that merges across the seam is refused)."""
        if content is not None and any(t in content for t in self.special_token_texts):
            return super().response_ids(prompt_text, prompt_ids, text, content, record)
        head = self.tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
        whole = self.tokenizer(prompt_text + text, add_special_tokens=False)["input_ids"]
        if whole[: len(head)] != head:
            raise BadRecordError(
                record,
                "template_mismatch",
                "the prompt's tokens are not a prefix of the prompt + response's tokens (the tokenizer merges "
                "across the end of the prompt): the response tokens cannot be separated exactly",
            )
        return self.ended(whole[len(head) :])

    def position_ids(self, model: Any, batch: PairBatch, blocks: Blocks) -> torch.Tensor | None:
        """The model's own positions on right-padded rows (what it computes for each sequence alone);
        1-D positions on left-padded ones, refused for a model with 3-D (M-RoPE) positions."""
        if all(b.offset == 0 for b in blocks.blocks):
            return None
        if self.mrope:
            raise ValueError(
                f"model_type={self.model_type!r} has 3-D (M-RoPE) positions, which the generic family cannot "
                f"write for left-padded rows: use padding_side='right'"
            )
        return super().position_ids(model, batch, blocks)
