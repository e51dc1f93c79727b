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

Both batch layouts work: the plain two-row one, and the shared-prefix packed one (one row per pair,
see packed.py), for which LLaVA splices the prompts alone and the packed row is rebuilt from embeddings.

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

from mm_unidpo.data.images import load_record_images
from mm_unidpo.data.records import IMAGE_PLACEHOLDER, BadRecordError, Message, PreferenceRecord

from .base import (Adapter, EncodedPair, PairBatch, SequenceLogps, per_row_sums, scored_targets, to_model_inputs,
                   unwrap_model)
from .llava_orig_processor import DEFAULT_CONV_MODE, LlavaOrigProcessor, load_llava_orig, num_image_tokens
from .packed import PackedPairBatch, attention_allowed, attention_bias

logger = logging.getLogger(__name__)

__all__ = ["LlavaOrigAdapter", "LlavaOrigProcessor", "cache_keyword_compat", "load_llava_orig", "num_image_tokens"]


class LlavaOrigAdapter(Adapter):
    family = "llava_orig"
    model_types = ("llava_llama",)
    packed_attention = False  # LlavaLlamaForCausalLM.forward takes no extra keywords
    takes_logits_to_keep = False
    supports_varlen = False

    def __init__(self, model: Any, processor: Any, *, conv_mode: str | None = None, **options: Any):
        super().__init__(model, processor, **options)
        from llava.constants import IMAGE_TOKEN_INDEX as llava_index
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
                f"image token count varies per image. Use its llava-hf conversion with the llava_next family.")
        self.image_token_index = getattr(processor, "image_token_index", llava_index)
        self.num_image_tokens = num_image_tokens(model)
        given = getattr(processor, "num_image_tokens", None)
        if given is not None and given != self.num_image_tokens:
            raise ValueError(f"the processor says {given} tokens per image but the model's vision tower makes "
                             f"{self.num_image_tokens}")
        self.use_im_start_end = bool(getattr(config, "mm_use_im_start_end", False))
        limit = getattr(config, "tokenizer_model_max_length", None)
        if limit is not None and self.max_length > limit:
            logger.warning("llava_orig: max_length %d is above the model's tokenizer_model_max_length %d, at which "
                           "LLaVA cuts the spliced sequence; using %d", self.max_length, limit, limit)
            self.max_length = int(limit)

    # ---- rendering with llava.conversation ------------------------------------------------------------

    def messages(self, record: PreferenceRecord) -> list[Message]:
        """Chat messages with text content (verbatim for string prompts, as in LLaVA's data files), checked to
        be what a LLaVA conversation can hold: an optional system message, then user / assistant turns
        alternating from a user turn and ending with one."""
        if isinstance(record.prompt, str):
            return [{"role": "user", "content": record.prompt}]
        out = [{"role": m.get("role", "user"), "content": _content_text(m.get("content"))} for m in record.prompt]
        turns = out[1:] if out and out[0]["role"] == "system" else out
        for i, m in enumerate(turns):
            expected = "user" if i % 2 == 0 else "assistant"
            if m["role"] != expected:
                raise BadRecordError(record, "bad_prompt",
                                     f"message {i + len(out) - len(turns)} has role {m['role']!r} where the LLaVA "
                                     f"conversation expects {expected!r} (an optional system message, then user and "
                                     f"assistant turns alternating, ending with a user turn)")
        if not turns or turns[-1]["role"] != "user":
            raise BadRecordError(record, "bad_prompt", "the prompt must end with a user turn")
        return out

    def render(self, messages: list[Message], response: str | None) -> str:
        from llava.conversation import conv_templates

        conv = conv_templates[self.conv_mode].copy()
        for m in messages:
            text = m["content"] if isinstance(m["content"], str) else _content_text(m["content"])
            if self.use_im_start_end:
                from llava.constants import DEFAULT_IM_END_TOKEN, DEFAULT_IM_START_TOKEN

                text = text.replace(IMAGE_PLACEHOLDER, DEFAULT_IM_START_TOKEN + IMAGE_PLACEHOLDER + DEFAULT_IM_END_TOKEN)
            if m["role"] == "system":
                conv.system = text
            else:
                conv.append_message(conv.roles[0] if m["role"] == "user" else conv.roles[1], text)
        conv.append_message(conv.roles[1], response)
        return conv.get_prompt()

    # ---- encoding -----------------------------------------------------------------------------------

    def encode(self, record: PreferenceRecord) -> EncodedPair:
        prompt_text, chosen_text, rejected_text = self.render_pair(record)
        for name, text in (("chosen", chosen_text), ("rejected", rejected_text)):
            if IMAGE_PLACEHOLDER in text:
                raise BadRecordError(record, "placeholder_mismatch",
                                     f"the {name} response contains {IMAGE_PLACEHOLDER!r}, which LLaVA would replace "
                                     f"with image features")
        images = load_record_images(record, max_pixels=self.max_image_pixels) if record.images else []
        try:
            prompt_ids, vision, _ = self.tokenize_prompt(prompt_text, images, record)
        except ValueError as error:
            raise BadRecordError(record, "placeholder_mismatch", str(error)) from None
        n_images = prompt_ids.count(self.image_token_index)
        prompt_length = len(prompt_ids) + n_images * (self.num_image_tokens - 1)
        room = self.max_length - prompt_length
        if room < 1:
            raise BadRecordError(record, "prompt_too_long",
                                 f"the prompt takes {prompt_length} tokens ({n_images} image(s) of "
                                 f"{self.num_image_tokens} tokens included) and max_length is {self.max_length}: "
                                 f"no response token fits")
        chosen = self._continuation_ids(prompt_text, prompt_ids, chosen_text, record.chosen, record)
        rejected = self._continuation_ids(prompt_text, prompt_ids, rejected_text, record.rejected, record)
        truncated = len(chosen) > room or len(rejected) > room
        self.stats.encoded += 1
        if truncated:
            self.stats.truncated += 1
        return EncodedPair(prompt_ids, chosen[:room], rejected[:room], vision, {}, truncated, record)

    def packed_length(self, encoded: EncodedPair) -> int:
        """As the base class, with every ``<image>`` id counted as the features it becomes."""
        images = encoded.prompt_ids.count(self.image_token_index)
        return super().packed_length(encoded) + images * (self.num_image_tokens - 1)

    def tokenize_prompt(self, text: str, images: list, record: PreferenceRecord | None = None
                        ) -> tuple[list[int], dict, dict]:
        """Prompt ids (each ``<image>`` one id, -200) and ``{"images", "image_sizes"}`` for its images."""
        out = self.processor(text=[text], images=images or None)
        vision: dict[str, torch.Tensor] = {}
        if images:
            pixels = out["images"]
            if isinstance(pixels, list):  # only "anyres" gives per-image shapes, refused in __init__
                pixels = torch.stack(pixels)
            vision = {"images": pixels, "image_sizes": torch.tensor(out["image_sizes"], dtype=torch.long)}
        return out["input_ids"][0].tolist(), vision, {}

    def _continuation_ids(self, prompt_text: str, prompt_ids: list[int], response_text: str, content: str | None = None,
                          record: PreferenceRecord | None = None) -> list[int]:
        """The response's tokens as LLaVA's training tokenizes them: the whole conversation at once, minus the
        prompt's tokens (falls back to tokenizing the response alone if the prompt is not a token prefix). A
        response holding special-token text ("</s>") is tokenized alone, that text as plain text (base class)."""
        from llava.mm_utils import tokenizer_image_token

        if content is not None and any(t in content for t in self._special_token_texts):
            return self._response_ids(response_text, content, record)
        full = tokenizer_image_token(prompt_text + response_text, self.tokenizer, self.image_token_index)
        if full[:len(prompt_ids)] == prompt_ids:
            ids = list(full[len(prompt_ids):])
        else:
            ids = self.tokenizer(response_text, add_special_tokens=False)["input_ids"]
        if not ids or ids[-1] not in self.end_token_ids:
            ids = ids + [self.tokenizer.eos_token_id]
        return ids

    def stack_vision(self, per_record: list[dict[str, torch.Tensor]], copies: int = 2) -> dict[str, torch.Tensor]:
        """All images of the rows in row order (`copies` rows per record, chosen rows then rejected rows);
        an image-less row gets one zero image (see module doc)."""
        with_images = [v for v in per_record if "images" in v]
        if not with_images:
            return {}
        shape = with_images[0]["images"].shape[1:]
        dtype = with_images[0]["images"].dtype
        dummy = {"images": torch.zeros((1, *shape), dtype=dtype),
                 "image_sizes": torch.tensor([[shape[-1], shape[-2]]], dtype=torch.long)}
        rows = [v if "images" in v else dummy for v in per_record] * copies
        return {k: torch.cat([v[k] for v in rows]) for k in ("images", "image_sizes")}

    # ---- log-probs ----------------------------------------------------------------------------------

    def spliced_inputs(self, model: Any, batch: PairBatch) -> tuple[dict[str, Any], torch.Tensor]:
        """(forward inputs, labels) over the expanded sequences (image features spliced in, LLaVA's padding)."""
        base = unwrap_model(model)
        position_ids = (batch.attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        images = batch.vision.get("images")
        if images is None:  # text only: no splicing
            return {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask,
                    "position_ids": position_ids}, batch.labels
        projector = base.get_model().mm_projector
        images = images.to(device=batch.input_ids.device, dtype=next(projector.parameters()).dtype)
        image_sizes = batch.vision["image_sizes"].tolist() if "image_sizes" in batch.vision else None
        # Passing position_ids makes LLaVA rebuild them for its own padding (None would give arange,
        # wrong for left-padded rows).
        _, position_ids, attention_mask, _, inputs_embeds, labels = base.prepare_inputs_labels_for_multimodal(
            batch.input_ids, position_ids, batch.attention_mask, None, batch.labels, images, image_sizes)
        return {"input_ids": None, "inputs_embeds": inputs_embeds, "attention_mask": attention_mask,
                "position_ids": position_ids}, labels

    def spliced_logits(self, model: Any, batch: PairBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, labels) over the expanded sequences."""
        inputs, labels = self.spliced_inputs(model, batch)
        return model(**inputs, use_cache=False).logits, labels

    def forward_logits(self, model: Any, batch: PairBatch) -> torch.Tensor:
        raise NotImplementedError("llava_orig logits come over the expanded sequence and do not line up with "
                                  "batch.input_ids; use spliced_logits(), which returns the matching labels")

    def logits_and_labels(self, model: Any, batch: PairBatch) -> tuple[torch.Tensor, torch.Tensor]:
        return self.spliced_logits(model, batch)

    @torch.no_grad()
    def generate(self, model: Any, prompts: list[str], images: list[list[Any]], *, device: Any = None,
                 **settings: Any) -> torch.Tensor:
        """As :meth:`Adapter.generate`, through LLaVA's own ``generate(inputs, images, image_sizes)``, which
        splices the image features in and decodes from embeddings (so it returns the new tokens only).
        Rows without an image in a batch with images get LLaVA's zero dummy image (see module doc)."""
        per_row = [self.tokenize_prompt(text, row) for text, row in zip(prompts, images)]
        lengths = [len(ids) + ids.count(self.image_token_index) * (self.num_image_tokens - 1) for ids, _, _ in per_row]
        base = unwrap_model(model)
        limit = getattr(base.config, "tokenizer_model_max_length", None)
        if limit is not None and max(lengths) > limit:
            row = max(range(len(lengths)), key=lengths.__getitem__)
            raise ValueError(f"prompt {row} takes {lengths[row]} positions with its image features and LLaVA cuts "
                             f"at tokenizer_model_max_length={limit}: shorten it")
        width = max(len(ids) for ids, _, _ in per_row)
        input_ids = torch.full((len(prompts), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, (ids, _, _) in enumerate(per_row):
            input_ids[i, width - len(ids):] = torch.tensor(ids)
            attention_mask[i, width - len(ids):] = 1
        inputs = {"inputs": input_ids, "attention_mask": attention_mask,
                  **self.stack_vision([vision for _, vision, _ in per_row], copies=1)}
        inputs = to_model_inputs(inputs, model, device)
        if "image_sizes" in inputs:
            inputs["image_sizes"] = inputs["image_sizes"].tolist()
        settings.setdefault("pad_token_id", self.pad_token_id)
        settings.setdefault("eos_token_id", sorted(self.end_token_ids))
        if settings.get("stop_strings"):
            # LLaVA's forward takes no **kwargs, and generate() hands `tokenizer` on to it: pass the
            # stop-string criterion built here instead.
            from transformers import StoppingCriteriaList, StopStringCriteria

            criterion = StopStringCriteria(settings.pop("tokenizer", None) or self.tokenizer,
                                           settings.pop("stop_strings"))
            settings["stopping_criteria"] = StoppingCriteriaList([*settings.get("stopping_criteria", []), criterion])
        with _padding_side(base.config, "left"), cache_keyword_compat(base):  # LLaVA re-pads spliced rows on this side
            return model.generate(**inputs, **settings)

    def sequence_logps(self, model: Any, batch: PairBatch | PackedPairBatch) -> SequenceLogps:
        if isinstance(batch, PackedPairBatch):
            return self._packed_logps(model, batch)
        inputs, labels = self.spliced_inputs(model, batch)
        rows, predictors, targets = scored_targets(labels)
        sums, counts = per_row_sums(self.scored_logps(model, inputs, rows, predictors, targets), rows, labels.shape[0])
        expected = (batch.labels != -100).sum(-1).to(counts.device)
        if not torch.equal(counts, expected):
            raise RuntimeError(f"LLaVA's splicing changed the number of response tokens ({expected.tolist()} -> "
                               f"{counts.tolist()}): was the sequence cut at tokenizer_model_max_length?")
        b = batch.num_pairs
        return SequenceLogps(sums[:b], sums[b:], counts[:b], counts[b:])

    def _packed_logps(self, model: Any, batch: PackedPairBatch) -> SequenceLogps:
        """The packed layout (see packed.py) over the expanded prompts: LLaVA splices the image features
        into the prompts alone; the rows are rebuilt from embeddings with the same pairs in the same rows.
        LLaVA's forward takes no keyword for attention, so the pair blocks are a dense mask here."""
        base = unwrap_model(model)
        embed = base.get_model().embed_tokens
        prompt_ids, prompt_mask, _ = batch.prompts()
        images = batch.vision.get("images")
        if images is None:
            prompts = [embed(prompt_ids[i][prompt_mask[i].bool()]) for i in range(batch.num_pairs)]
        else:
            projector = base.get_model().mm_projector
            images = images.to(device=prompt_ids.device, dtype=next(projector.parameters()).dtype)
            _, _, spliced_mask, _, spliced, _ = base.prepare_inputs_labels_for_multimodal(
                prompt_ids, None, prompt_mask, None, None, images, None)
            prompts = [spliced[i][spliced_mask[i].bool()] for i in range(batch.num_pairs)]
        lengths = [x.shape[0] for x in prompts]
        n_images = (prompt_ids == self.image_token_index).sum(-1)
        expected = (prompt_mask.sum(-1) + n_images * (self.num_image_tokens - 1)).tolist()
        if lengths != expected:
            raise RuntimeError(f"LLaVA's splicing gave prompts of {lengths} positions, expected {expected}: "
                               f"was a prompt cut at tokenizer_model_max_length?")
        layout = batch.layout.resized(lengths)
        device = prompt_ids.device
        inputs_embeds = torch.zeros((layout.num_rows, layout.width, prompts[0].shape[-1]), dtype=prompts[0].dtype,
                                    device=device)
        for prompt, (row, o, p, c, r), (src_row, src, src_p, _, _) in zip(
                prompts, layout.pair_spans(), batch.layout.pair_spans()):
            inputs_embeds[row, o:o + p] = prompt
            inputs_embeds[row, o + p:o + p + c + r] = embed(batch.input_ids[src_row, src + src_p:src + src_p + c + r])
        if self.attn_implementation == "sdpa":
            mask = attention_allowed(layout, device)
        else:
            mask = attention_bias(layout, self.compute_dtype, device)
        inputs = {"input_ids": None, "inputs_embeds": inputs_embeds, "attention_mask": mask,
                  "position_ids": layout.positions(device)}
        source, scored = batch.layout.scored(device), layout.scored(device)
        targets = batch.input_ids[source.rows, source.columns]
        c_sum, c_len, r_sum, r_len = scored.sums(self.scored_logps(model, inputs, scored.rows, scored.predictors,
                                                                   targets))
        return SequenceLogps(c_sum, r_sum, c_len, r_len)


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
    forward.__signature__ = inspect.signature(inner).replace(parameters=params)
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
