"""The adapter contract: preference records in, image-conditioned response log-probs out.

    adapter = get_adapter(model, processor)
    batch = adapter.collate(records)            # one of the layouts below
    out = adapter.sequence_logps(model, batch)  # (B,) sums and counts over response tokens

The prompt is rendered with the model's own chat template, the response is what the template writes
for an assistant turn, up to and including its end-of-turn token (counted in the length). Only
response tokens are scored. Truncation cuts the response from its end and never the prompt (which
holds the image tokens); a prompt that leaves no room for one response token is a bad record.

Layouts: by default the pairs of a micro-batch are packed back to back with their prompts shared
(packed.py, attention.py); `shared_prefix=False` gives the plain layout, two padded rows per pair
(batches.py), or under flash-attention its padding-free form. In every layout the LM head runs on
the scored positions only, from the final hidden states (head.py). A family adapter overrides only what
differs: how a prompt with images is turned into token ids and vision tensors, and which tensors the
forward needs.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from mm_unidpo.data.images import DEFAULT_MAX_PIXELS, load_record_images
from mm_unidpo.data.records import IMAGE_PLACEHOLDER, BadRecordError, Message, PreferenceRecord, SkipReport

from .attention import NAME as PACKED_ATTENTION
from .attention import packed_mask_placeholder, use_packed_attention
from .head import DEFAULT_CHUNK_SIZE, final_hidden_states, keeps_its_head, token_logps, token_logps_and_argmax
from .batches import (IGNORE_INDEX, EncodedPair, PairBatch, SequenceLogps, pad_pairs, per_row_sums,  # noqa: F401
                      response_logps, scored_targets)
from .packed import PackedPairBatch, VarlenPairBatch, attention_allowed, attention_bias, pack, pack_sequences
from .special_tokens import ids_with_plain_content, special_token_texts
from .utils import to_model_inputs, unwrap_model  # noqa: F401  (part of this module's interface)

logger = logging.getLogger(__name__)


@dataclass
class AdapterStats:
    truncated: int = 0
    encoded: int = 0


class Adapter:
    """Shared logic for every family; subclasses set `family` and override the hooks below."""

    family: ClassVar[str] = ""
    model_types: ClassVar[tuple[str, ...]] = ()  # config.model_type values this adapter serves
    token_extra_keys: ClassVar[tuple[str, ...]] = ()  # processor outputs that are per token
    pass_position_ids: ClassVar[bool] = True  # False where the model derives positions itself (M-RoPE)
    supports_shared_prefix: ClassVar[bool] = True  # the packed fast path (see packed.py)
    packed_attention: ClassVar[bool] = True  # the forward hands keyword arguments to attention (attention.py)
    takes_logits_to_keep: ClassVar[bool] = True
    supports_varlen: ClassVar[bool] = True  # the padding-free plain layout (packed.VarlenPairBatch)

    def __init__(self, model: Any, processor: Any, *, max_length: int = 2048, padding_side: str = "right",
                 max_image_pixels: int | None = DEFAULT_MAX_PIXELS, on_bad_record: str = "error",
                 shared_prefix: bool = True, pack_pairs: bool = True, max_tokens_per_row: int | None = None,
                 head_chunk_size: int | str | None = DEFAULT_CHUNK_SIZE, varlen: bool | None = None):
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        if on_bad_record not in ("error", "skip"):
            raise ValueError(f"on_bad_record must be 'error' or 'skip', got {on_bad_record!r}")
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.max_length = max_length
        self.padding_side = padding_side
        self.max_image_pixels = max_image_pixels
        self.on_bad_record = on_bad_record
        self.skips = SkipReport()  # records dropped at encode time (e.g. prompt_too_long) under "skip"
        self.stats = AdapterStats()
        pad = self.tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else self.tokenizer.eos_token_id
        self.end_token_ids = self._end_token_ids(model)
        # A response must not hold the token the model replaces with image / video features.
        config = getattr(model, "config", None)
        self.media_token_ids = {getattr(config, k, None) for k in ("image_token_id", "image_token_index",
                                                                    "video_token_id", "video_token_index")}
        self.media_token_ids = {i for i in self.media_token_ids if isinstance(i, int)}
        attn = getattr(getattr(model, "config", None), "_attn_implementation", None) or "sdpa"
        # Flash-attention kernels take no arbitrary mask: they use the plain layout.
        self.shared_prefix = shared_prefix and self.supports_shared_prefix and not attn.startswith("flash")
        self.attn_implementation = attn
        # The plain layout without padding for flash-attention's varlen kernels (1-D positions only).
        self.varlen = (attn.startswith("flash") if varlen is None else varlen) and not self.shared_prefix \
            and self.pass_position_ids and self.supports_varlen
        # Shared-prefix rows: all pairs of a batch back to back (under `max_tokens_per_row`), or one pair a row.
        self.max_row_tokens = max_tokens_per_row if pack_pairs else 0
        self.head_chunk_size = head_chunk_size  # None: materialise the LM head's logits (the reference path)
        embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
        self.compute_dtype = getattr(getattr(embeddings, "weight", None), "dtype", torch.float32)

    @classmethod
    def matches(cls, model: Any) -> bool:
        config = getattr(model, "config", None)
        return getattr(config, "model_type", None) in cls.model_types

    # ---- hooks a family overrides ---------------------------------------------------------------

    def render(self, messages: list[Message], response: str | None) -> str:
        """The chat-template text of `messages` (+ the assistant `response`, or the generation prompt)."""
        template_owner = self.processor if hasattr(self.processor, "apply_chat_template") else self.tokenizer
        if response is None:
            return template_owner.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        turn = {"role": "assistant", "content": [{"type": "text", "text": response}]}
        return template_owner.apply_chat_template(messages + [turn], tokenize=False, add_generation_prompt=False)

    def processor_images(self, rows: list[list[Any]]) -> list[Any]:
        """The processor's ``images=`` for a batch whose k-th text has the images ``rows[k]``: all images
        in order by default; a family whose processor lays out images per text overrides it."""
        return [image for row in rows for image in row]

    def tokenize_prompt(self, text: str, images: list, record: PreferenceRecord) -> tuple[list[int], dict, dict]:
        """Token ids of the rendered prompt (image tokens expanded), vision tensors, per-token extras."""
        kwargs = {"images": self.processor_images([images])} if images else {}
        out = self.processor(text=[text], return_tensors="pt", add_special_tokens=self._needs_special_tokens(text),
                             **kwargs)
        ids = out["input_ids"][0].tolist()
        extras = {k: out[k][0].tolist() for k in self.token_extra_keys if k in out}
        vision = {k: v for k, v in out.items()
                  if k not in ("input_ids", "attention_mask", *self.token_extra_keys) and isinstance(v, torch.Tensor)}
        return ids, vision, extras

    def _needs_special_tokens(self, text: str) -> bool:
        # As transformers' apply_chat_template: a template that writes BOS itself gets none added.
        bos = self.tokenizer.bos_token
        return not (bos and text.startswith(bos))

    def stack_vision(self, per_record: list[dict[str, torch.Tensor]], copies: int = 2) -> dict[str, torch.Tensor]:
        """Lay the records' vision tensors out for the rows: `copies=2` for the plain layout (chosen rows,
        then rejected rows), 1 for the packed layout (one row per pair)."""
        keys = {k for v in per_record for k in v}
        repeated = per_record * copies
        return {k: torch.cat([v[k] for v in repeated if k in v], dim=0) for k in sorted(keys)}

    def model_inputs(self, batch: PairBatch) -> dict[str, Any]:
        inputs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask,
                  **batch.vision, **batch.token_extras}
        if self.pass_position_ids:
            inputs["position_ids"] = (batch.attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        return inputs

    # ---- messages and rendering -------------------------------------------------------------------

    def messages(self, record: PreferenceRecord) -> list[Message]:
        """The prompt as chat messages whose content is a list of text / image parts."""
        if isinstance(record.prompt, str):
            return [{"role": "user", "content": _parts(record.prompt)}]
        out = []
        for message in record.prompt:
            content = message.get("content")
            parts = _parts(content) if isinstance(content, str) else list(content or [])
            out.append({"role": message.get("role", "user"), "content": parts})
        return out

    def render_pair(self, record: PreferenceRecord) -> tuple[str, str, str]:
        """(prompt text, chosen text, rejected text); each response as the template writes it."""
        messages = self.messages(record)
        prompt = self.render(messages, None)
        return prompt, self._response_text(messages, prompt, record.chosen, record), \
            self._response_text(messages, prompt, record.rejected, record)

    def _response_text(self, messages: list[Message], prompt: str, response: str, record: PreferenceRecord) -> str:
        full = self.render(messages, response)
        if not full.startswith(prompt):
            raise BadRecordError(record, "template_mismatch",
                                 "the chat template renders the prompt differently with and without a response; "
                                 "cannot separate response tokens")
        # Anything a template writes after the end-of-turn token (e.g. "\n") is not part of the response.
        return full[len(prompt):].rstrip()

    # ---- encoding -----------------------------------------------------------------------------------

    def encode(self, record: PreferenceRecord) -> EncodedPair:
        prompt_text, chosen_text, rejected_text = self.render_pair(record)
        self._check_response_media(record)
        images = load_record_images(record, max_pixels=self.max_image_pixels) if record.images else []
        prompt_ids, vision, extras = self._tokenize_checked(prompt_text, images, record)
        room = self.max_length - len(prompt_ids)
        if room < 1:
            raise BadRecordError(record, "prompt_too_long",
                                 f"the prompt takes {len(prompt_ids)} tokens (images included) and max_length is "
                                 f"{self.max_length}: no response token fits")
        chosen = self._response_ids(chosen_text, record.chosen, record)
        rejected = self._response_ids(rejected_text, record.rejected, record)
        for name, ids in (("chosen", chosen), ("rejected", rejected)):
            if self.media_token_ids.intersection(ids):
                raise BadRecordError(record, "placeholder_mismatch",
                                     f"the {name} response contains the model's image/video token, which the model "
                                     f"would take for an image slot")
        truncated = len(chosen) > room or len(rejected) > room
        self.stats.encoded += 1
        if truncated:
            self.stats.truncated += 1
        return EncodedPair(prompt_ids, chosen[:room], rejected[:room], vision, extras, truncated, record)

    def packed_length(self, encoded: EncodedPair) -> int:
        """The tokens a pair takes in a packed row (its prompt once, both responses)."""
        return len(encoded.prompt_ids) + len(encoded.chosen_ids) + len(encoded.rejected_ids)

    def _tokenize_checked(self, text: str, images: list, record: PreferenceRecord) -> tuple[list[int], dict, dict]:
        """`tokenize_prompt`, with a processor's own complaint (image tokens in the text that do not match the
        images, a video token without a video...) turned into the record's error."""
        try:
            return self.tokenize_prompt(text, images, record)
        except BadRecordError:
            raise
        except ValueError as error:  # transformers processors check placeholders against the images given
            reason = "placeholder_mismatch" if "token" in str(error) else "encode_failed"
            raise BadRecordError(record, reason, f"the processor refuses the prompt: {error}") from None
        except (TypeError, RuntimeError, IndexError, KeyError) as error:
            raise BadRecordError(record, "encode_failed",
                                 f"the processor fails on this record: {type(error).__name__}: {error}") from None

    def _check_response_media(self, record: PreferenceRecord) -> None:
        """A response holding the text of the model's image/video token is a bad record (it would be an image
        slot), even though other special-token text in a response is encoded as plain text."""
        for name in ("chosen", "rejected"):
            found = [t for t in self._media_token_texts if t in getattr(record, name)]
            if found:
                raise BadRecordError(record, "placeholder_mismatch",
                                     f"the {name} response contains the model's image/video token {found[0]!r}, which "
                                     f"the model would take for an image slot")

    @functools.cached_property
    def _media_token_texts(self) -> list[str]:
        tokens = self.tokenizer.convert_ids_to_tokens(sorted(i for i in self.media_token_ids if i >= 0))
        return [t for t in tokens if t]

    @functools.cached_property
    def _special_token_texts(self) -> list[str]:
        return special_token_texts(self.tokenizer)

    def _response_ids(self, text: str, content: str | None = None, record: PreferenceRecord | None = None
                      ) -> list[int]:
        """Token ids of a rendered response `text` (the user's `content` as the template writes it, plus the
        template's end of turn), ending with an end token.

        Special-token text inside the user's response ("</s>", "<|im_end|>" written out, e.g. HTML's
        strikethrough tag) is encoded as plain text, never as that token: only the template's own tokens
        are special, so a response never ends mid-way."""
        if content is not None and any(t in content for t in self._special_token_texts):
            ids = ids_with_plain_content(self.tokenizer, text, content, self._special_token_texts, record)
        else:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if not ids or ids[-1] not in self.end_token_ids:
            ids = ids + [self.tokenizer.eos_token_id]
        return ids

    def _end_token_ids(self, model: Any) -> set[int]:
        ids = {self.tokenizer.eos_token_id}
        gen = getattr(model, "generation_config", None)
        eos = getattr(gen, "eos_token_id", None)
        ids.update(eos if isinstance(eos, (list, tuple)) else [eos])
        return {i for i in ids if i is not None}

    # ---- batching -----------------------------------------------------------------------------------

    def collate(self, records: list[PreferenceRecord | EncodedPair]) -> PairBatch | PackedPairBatch:
        encoded, kept = self._encode_all(records)
        if self.shared_prefix:
            batch = pack(encoded, self.pad_token_id, self.stack_vision([e.vision for e in encoded], copies=1),
                         max_row_tokens=self.max_row_tokens)
            batch.kept = kept
            return batch
        if self.varlen:
            batch = pack_sequences(encoded, self.stack_vision([e.vision for e in encoded]))
            batch.kept = kept
            return batch
        batch = pad_pairs(encoded, self.pad_token_id, self.padding_side, self.stack_vision([e.vision for e in encoded]))
        batch.kept = kept
        return batch

    def _encode_all(self, records: list[PreferenceRecord | EncodedPair]) -> tuple[list[EncodedPair], list[int] | None]:
        if self.on_bad_record == "error":
            return [r if isinstance(r, EncodedPair) else self.encode(r) for r in records], None
        encoded, kept = [], []
        for i, r in enumerate(records):
            try:
                encoded.append(r if isinstance(r, EncodedPair) else self.encode(r))
                kept.append(i)
            except BadRecordError as error:
                if self.skips.add(error, key=("record", id(r))):  # once per record, however often it is met
                    logger.warning("skipping %s", error)
        if not encoded:
            raise BadRecordError(None, "empty_batch", f"all {len(records)} records of this batch were bad "
                                 f"({self.skips.summary()})")
        return encoded, kept

    # ---- log-probs ----------------------------------------------------------------------------------

    def forward_logits(self, model: Any, batch: PairBatch) -> torch.Tensor:
        return model(**self.model_inputs(batch), use_cache=False).logits

    def logits_and_labels(self, model: Any, batch: PairBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits of the plain layout and the labels they line up with (a family whose model changes the
        sequence, e.g. by splicing in image features, returns the labels moved along)."""
        return self.forward_logits(model, batch), batch.labels

    # ---- generation (evaluation, on-policy sampling) ------------------------------------------------

    @torch.no_grad()
    def generate(self, model: Any, prompts: list[str], images: list[list[Any]], *, device: Any = None,
                 **settings: Any) -> torch.Tensor:
        """New token ids continuing each rendered prompt (`images`: one list of PIL images per prompt),
        ``num_return_sequences`` rows per prompt, padded after the end token. Rows are padded on the left,
        so every row continues from its own last token; `settings` go to ``model.generate`` (with
        ``return_dict_in_generate=True`` its output object comes back, ``sequences`` cut the same way)."""
        extra = {"images": self.processor_images(images)} if any(images) else {}
        inputs = self.processor(text=prompts, padding=True, padding_side="left", return_tensors="pt",
                                add_special_tokens=self._needs_special_tokens(prompts[0]), **extra)
        inputs = to_model_inputs(dict(inputs), model, device)
        settings.setdefault("pad_token_id", self.pad_token_id)
        settings.setdefault("eos_token_id", sorted(self.end_token_ids))
        out = model.generate(**inputs, **settings)
        if not isinstance(out, torch.Tensor):  # return_dict_in_generate: the output object, new tokens only
            out.sequences = out.sequences[:, inputs["input_ids"].shape[1]:]
            return out
        return out[:, inputs["input_ids"].shape[1]:]

    def packed_position_ids(self, model: Any, batch: PackedPairBatch) -> torch.Tensor:
        return batch.position_ids

    def packed_inputs(self, model: Any, batch: PackedPairBatch) -> dict[str, Any]:
        inputs = {"input_ids": batch.input_ids, "position_ids": self.packed_position_ids(model, batch),
                  **batch.vision, **batch.token_extras}
        device = batch.input_ids.device
        if self.packed_attention and use_packed_attention(model):  # per-pair attention blocks
            inputs.update(attention_mask=packed_mask_placeholder(batch.layout, device), packed_layout=batch.layout)
        elif self.attn_implementation in ("sdpa", PACKED_ATTENTION):
            # a dense boolean mask (True = attend), valid whatever the autocast dtype
            inputs["attention_mask"] = attention_allowed(batch.layout, device)
        else:
            inputs["attention_mask"] = attention_bias(batch.layout, self.compute_dtype, device)
        return inputs

    def sequence_logps(self, model: Any, batch: PairBatch | PackedPairBatch | VarlenPairBatch) -> SequenceLogps:
        if isinstance(batch, PackedPairBatch):
            scored = batch.layout.scored(batch.input_ids.device)
            targets = batch.input_ids[scored.rows, scored.columns]
            logps = self.scored_logps(model, self.packed_inputs(model, batch), scored.rows, scored.predictors, targets)
            c_sum, c_len, r_sum, r_len = scored.sums(logps)
            return SequenceLogps(c_sum, r_sum, c_len, r_len)
        if isinstance(batch, VarlenPairBatch):
            inputs = {"input_ids": batch.input_ids, "position_ids": batch.position_ids, **batch.vision,
                      **batch.token_extras, **batch.flash_kwargs()}
            rows, predictors, targets = scored_targets(batch.labels)
            logps = self.scored_logps(model, inputs, rows, predictors, targets)
            sums, counts = per_row_sums(logps, batch.sequence.to(rows.device)[predictors + 1], 2 * batch.num_pairs)
        else:
            rows, predictors, targets = scored_targets(batch.labels)
            logps = self.scored_logps(model, self.model_inputs(batch), rows, predictors, targets)
            sums, counts = per_row_sums(logps, rows, batch.labels.shape[0])
        b = batch.num_pairs
        return SequenceLogps(sums[:b], sums[b:], counts[:b], counts[b:])

    def scored_logps(self, model: Any, inputs: dict[str, Any], rows: torch.Tensor, predictors: torch.Tensor,
                     targets: torch.Tensor, *, greedy: bool = False):
        """log p(targets) from the model's output at (rows, predictors) on `inputs`; with `greedy`, also
        whether each target is the argmax token. The LM head runs on those positions only: chunked
        from the hidden states (head.py), or, with ``head_chunk_size=None`` or a model that transforms its
        logits, the model's own head on the columns kept (``logits_to_keep``)."""
        if self.head_chunk_size is not None and not keeps_its_head(model):
            with final_hidden_states(model) as head:
                hidden = model(**inputs, use_cache=False).logits
            picked = hidden[rows, predictors]
            if greedy:
                return token_logps_and_argmax(head, picked, targets, chunk_size=self.head_chunk_size)
            return token_logps(head, picked, targets, chunk_size=self.head_chunk_size)
        if self.takes_logits_to_keep:
            keep, index = torch.unique(predictors, return_inverse=True)
            logits = model(**inputs, use_cache=False, logits_to_keep=keep).logits[rows, index].float()
        else:
            logits = model(**inputs, use_cache=False).logits[rows, predictors].float()
        logps = logits.gather(-1, targets[:, None]).squeeze(-1) - logits.logsumexp(-1)
        return (logps, logits.argmax(-1) == targets) if greedy else logps

    @torch.no_grad()
    def continuation_logps(self, model: Any, batch: PairBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Per row of a plain batch: the sum of log p(labelled tokens) and whether greedy decoding gives
        exactly them (evaluation log-likelihoods)."""
        with final_hidden_states(model) if self.head_chunk_size is not None and not keeps_its_head(model) \
                else _materialised(model) as head:
            outputs, labels = self.logits_and_labels(model, batch)
        rows, predictors, targets = scored_targets(labels)
        picked = outputs[rows, predictors]
        if head is None:  # the model's own logits
            logits = picked.float()
            logps, hits = logits.gather(-1, targets[:, None]).squeeze(-1) - logits.logsumexp(-1), logits.argmax(-1) == targets
        else:
            logps, hits = token_logps_and_argmax(head, picked, targets, chunk_size=self.head_chunk_size)
        sums, _ = per_row_sums(logps, rows, labels.shape[0])
        misses = torch.zeros(labels.shape[0], dtype=torch.long, device=hits.device).index_add(
            0, rows.to(hits.device), (~hits).long())
        return sums, misses == 0


@contextmanager
def _materialised(model: Any) -> Iterator[None]:
    yield None


def _parts(text: str) -> list[dict[str, str]]:
    """Split text at <image> placeholders into interleaved image / text parts."""
    parts: list[dict[str, str]] = []
    for i, chunk in enumerate(text.split(IMAGE_PLACEHOLDER)):
        if i > 0:
            parts.append({"type": "image"})
        chunk = chunk.strip() if len(text.split(IMAGE_PLACEHOLDER)) > 1 else chunk
        if chunk:
            parts.append({"type": "text", "text": chunk})
    return parts
