"""The adapter: one family, one layout and the head options behind the package's model-facing calls.

    adapter = get_adapter(model, processor)      # family from the model's config, layout from the options
    batch = adapter.collate(records)             # encoding.py, then the layout (layouts/)
    out = adapter.sequence_logps(model, batch)   # logps.py: (B,) chosen / rejected sums and lengths

    prompt = adapter.encode_prompt(Prompt("<image>\\nWhat is this?", images=[...]))
    sums, greedy = adapter.score_continuations(model, [prompt], [continuation_ids])

Every prompt is a block followed by the responses scored after it (layouts/blocks.py): a pair's prompt
with its chosen and rejected responses; with `rejected_images` the rejected response after the prompt
with those images instead; with `contrast_views` (the image-side terms) the chosen response once more
after the prompt with the contrast view, slot 2 (`SequenceLogps.chosen_contrast`).

Layouts: by default the pairs of a micro-batch are packed back to back with their prompts shared
(`packed`); `shared_prefix=False` gives the `plain` layout, two padded rows per pair, or under
flash-attention its padding-free form (`varlen`). A family declares the layouts that are exact for it
and the adapter falls back to `plain` where the one asked for is not among them. In every layout the
LM head runs on the scored positions only, from the final hidden states (head.py).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from PIL import Image

from mm_unidpo.data.images import DEFAULT_MAX_PIXELS
from mm_unidpo.data.records import BadRecordError, Message, PreferenceRecord, PromptFields

from .encoding import EncodedPair, EncodedPrompt, encode_pair, encode_prompt, render_prompt, response_text
from .families import FAMILIES, Family, family_for_model
from .head import DEFAULT_CHUNK_SIZE
from .layouts import LAYOUTS, PairBatch
from .layouts.blocks import fill_rows
from .logps import ForwardOptions, SequenceLogps, batch_logps
from .utils import to_model_inputs, unwrap_model

logger = logging.getLogger(__name__)
CONTRAST = 2  # the slot of the chosen response under the contrast image


class Unit(NamedTuple):
    """A prompt and the responses scored after it, with their item and slots: one block of a layout."""

    item: int
    prompt_ids: list[int]
    responses: list[list[int]]
    slots: tuple[int, ...]
    token_extras: dict[str, list[int]]
    vision: dict[str, torch.Tensor]


def pair_units(item: int, e: EncodedPair) -> list[Unit]:
    """An encoded pair's prompts: the shared one with both responses, or with the chosen only when the
    rejected response has its own images; then the contrast prompt with the chosen response again."""
    rejected, contrast = e.rejected_prompt, e.contrast_prompt
    units = [
        Unit(item, e.prompt_ids, [e.chosen_ids, e.rejected_ids], (0, 1), e.token_extras, e.vision)
        if rejected is None
        else Unit(item, e.prompt_ids, [e.chosen_ids], (0,), e.token_extras, e.vision)
    ]
    if rejected is not None:
        units.append(Unit(item, rejected.ids, [e.rejected_ids], (1,), rejected.token_extras, rejected.vision))
    if contrast is not None:
        units.append(Unit(item, contrast.ids, [e.chosen_ids], (CONTRAST,), contrast.token_extras, contrast.vision))
    return units


class Adapter:
    def __init__(
        self,
        model: Any,
        processor: Any,
        family: type[Family],
        *,
        max_length: int = 2048,
        padding_side: str = "right",
        max_image_pixels: int | None = DEFAULT_MAX_PIXELS,
        on_bad_record: str = "error",
        shared_prefix: bool = True,
        pack_pairs: bool = True,
        max_tokens_per_row: int | None = None,
        head_chunk_size: int | str | None = DEFAULT_CHUNK_SIZE,
        varlen: bool | None = None,
        per_pair_attention: bool = True,
        contrast_views: Callable[[PreferenceRecord], list[Image.Image]] | None = None,
        contrast_key: str | None = None,
        token_weight: float | None = None,
        **family_options: Any,
    ):
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        if on_bad_record not in ("error", "skip"):
            raise ValueError(f"on_bad_record must be 'error' or 'skip', got {on_bad_record!r}")
        self.hooks = family(model, processor, **family_options)
        self.spec = family.spec
        self.family = family.spec.name
        self.processor = processor
        self.tokenizer = self.hooks.tokenizer
        self.pad_token_id = self.hooks.pad_token_id
        self.end_token_ids = self.hooks.end_token_ids
        self.max_length = self.hooks.max_length(max_length)
        self.padding_side = padding_side
        self.max_image_pixels = max_image_pixels
        self.on_bad_record = on_bad_record
        # The contrast image of each record (data/corruption.py), and what it depends on: a plain string
        # setting, so it is part of the reference cache's adapter fingerprint.
        self.contrast_views = contrast_views
        self.contrast_key = contrast_key
        if token_weight is not None and not token_weight > 0:
            raise ValueError(f"token_weight must be > 0 (DDPO's weight of the differing tokens), got {token_weight}")
        self.token_weight = token_weight  # DDPO (token_weights.py); a plain setting: in the cache fingerprint
        attn = getattr(getattr(model, "config", None), "_attn_implementation", None) or "sdpa"
        self.layout = _choose_layout(self.spec.layouts, attn, shared_prefix=shared_prefix, varlen=varlen)
        if shared_prefix and self.layout != "packed" and "packed" not in self.spec.layouts:
            logger.info("%s: the packed layout is not exact for this family; using %s", self.family, self.layout)
        # Packed rows: all pairs of a batch back to back (under `max_tokens_per_row`), or one pair a row.
        self.max_row_tokens = max_tokens_per_row if pack_pairs else 0
        embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
        self.forward_options = ForwardOptions(
            head_chunk_size,
            attn,
            getattr(getattr(embeddings, "weight", None), "dtype", torch.float32),
            per_pair_attention,
        )

    def __getattr__(self, name: str) -> Any:
        """A family's own settings (llava_orig's `conv_mode`, `num_image_tokens`) read through the adapter."""
        hooks = self.__dict__.get("hooks")
        if hooks is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(hooks, name)

    @property
    def shared_prefix(self) -> bool:
        return self.layout == "packed"

    @property
    def varlen(self) -> bool:
        return self.layout == "varlen"

    @property
    def head_chunk_size(self) -> int | str | None:
        return self.forward_options.head_chunk_size

    # ---- rendering and encoding ------------------------------------------------------------------

    def messages(self, record: PromptFields) -> list[Message]:
        """The prompt as chat messages."""
        return self.hooks.messages(record.prompt, record)

    def render(self, messages: list[Message], response: str | None) -> str:
        return self.hooks.render(messages, response)

    def render_prompt(self, prompt: PromptFields) -> str:
        """The chat-template text that generation continues."""
        return render_prompt(self.hooks, prompt)[1]

    def render_pair(self, record: PreferenceRecord) -> tuple[str, str, str]:
        """(prompt text, chosen text, rejected text); each response as the template writes it."""
        messages, prompt = render_prompt(self.hooks, record)
        return (
            prompt,
            response_text(self.hooks, messages, prompt, record.chosen, record),
            response_text(self.hooks, messages, prompt, record.rejected, record),
        )

    def encode(self, record: PreferenceRecord) -> EncodedPair:
        contrast = self.contrast_views(record) if self.contrast_views is not None else None
        return encode_pair(
            self.hooks, record, max_length=self.max_length, max_image_pixels=self.max_image_pixels, contrast=contrast
        )

    def encode_prompt(self, prompt: PromptFields) -> EncodedPrompt:
        return encode_prompt(self.hooks, prompt, max_image_pixels=self.max_image_pixels)

    def response_ids(self, prompt: EncodedPrompt, response: str, record: Any = None) -> list[int]:
        """Token ids of `response` as the assistant's turn after `prompt` (its end-of-turn token included),
        exactly as training encodes a chosen or rejected response."""
        self.hooks.check_response("response", response, record)
        text = response_text(self.hooks, prompt.messages, prompt.text, response, record)
        return self.hooks.response_ids(prompt.text, prompt.ids, text, response, record)

    def tokenize_text(self, text: str) -> list[int]:
        """Token ids of rendered text (special tokens added as the chat template expects)."""
        return self.tokenizer(text, add_special_tokens=self.hooks.needs_special_tokens(text))["input_ids"]

    def packed_length(self, encoded: EncodedPair) -> int:
        return encoded.packed_length

    # ---- batches and log-probs --------------------------------------------------------------------

    def collate(self, records: list[PreferenceRecord]) -> PairBatch:
        """Records encoded and laid out in this adapter's layout. Under
        ``on_bad_record="skip"`` bad records are left out: `batch.kept` lists the positions kept and
        `batch.skipped` the errors; a batch of only bad records is an error."""
        encoded, kept, skipped = self._encode_all(records)
        units = [unit for i, e in enumerate(encoded) for unit in pair_units(i, e)]
        batch = self._lay_out(units, num_items=len(encoded), num_slots=1 + max(max(u.slots) for u in units))
        scores = [(e.record.score_chosen, e.record.score_rejected) for e in encoded]
        if all(c is not None and r is not None for c, r in scores):
            batch.score_chosen = torch.tensor([c for c, _ in scores], dtype=torch.float32)
            batch.score_rejected = torch.tensor([r for _, r in scores], dtype=torch.float32)
        batch.ids = [e.record.id for e in encoded]
        batch.indices = [e.record.index for e in encoded]
        batch.truncated = [e.truncated for e in encoded]
        batch.kept, batch.skipped = kept, skipped
        return batch

    def sequence_logps(self, model: Any, batch: PairBatch, *, log_sum_sq: bool = False) -> SequenceLogps:
        """Chosen / rejected log-prob sums and lengths (and LD-DPO's shared sums); with `log_sum_sq`, WPO's
        Σ_t log Σ_v p(v)² per response, from the same head pass. With `token_weight` (DDPO,
        token_weights.py) the sums are weighted; the lengths stay token counts."""
        out = batch_logps(
            model, batch, self.hooks, self.forward_options, log_sum_sq=log_sum_sq, token_weight=self.token_weight
        )
        sq = out.log_sum_sq
        return SequenceLogps(
            out.logps[:, 0],
            out.logps[:, 1],
            out.counts[:, 0],
            out.counts[:, 1],
            out.shared[:, 0],
            out.shared[:, 1],
            None if sq is None else sq[:, 0],
            None if sq is None else sq[:, 1],
            out.logps[:, CONTRAST] if out.logps.shape[1] > CONTRAST else None,
        )

    @torch.no_grad()
    def score_continuations(
        self, model: Any, prompts: list[EncodedPrompt], continuations: list[list[list[int]]], device: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """For each prompt, its continuations (token ids after it; several share the prompt as a pair's
        responses do): (prompts, most continuations) sums of their log-probs and whether greedy decoding
        gives exactly them (evaluation log-likelihoods, judges' yes/no answers); zero / False where a
        prompt has fewer."""
        units = [
            Unit(i, p.ids, list(c), tuple(range(len(c))), p.token_extras, p.vision)
            for i, (p, c) in enumerate(zip(prompts, continuations))
        ]
        batch = self._lay_out(units, num_items=len(units), num_slots=max((len(c) for c in continuations), default=1))
        batch = batch.to(device if device is not None else model.device)
        batch.vision = to_model_inputs(batch.vision, model, device)  # floating inputs in the model's dtype
        out = batch_logps(model, batch, self.hooks, self.forward_options, greedy=True)
        assert out.greedy is not None
        present = torch.tensor(
            [[k < len(c) for k in range(out.logps.shape[1])] for c in continuations], device=out.logps.device
        )
        return out.logps * present, out.greedy & present.to(out.greedy.device)

    def _lay_out(self, units: list[Unit], *, num_items: int, num_slots: int) -> PairBatch:
        """Units (a prompt and its responses) -> a batch in this adapter's layout, each block named by its
        unit's item and slots."""
        name = self.layout
        planned = LAYOUTS[name].plan(
            [(len(u.prompt_ids), tuple(len(r) for r in u.responses)) for u in units],
            padding_side=self.padding_side,
            max_row_tokens=self.max_row_tokens,
        )
        per_block = [(units[b.item].prompt_ids, [units[b.item].responses[s] for s in b.slots]) for b in planned.blocks]
        extras = [units[b.item].token_extras for b in planned.blocks]
        input_ids, token_extras = fill_rows(planned, per_block, self.pad_token_id, extras)
        vision = self.hooks.stack_vision([units[b.item].vision for b in planned.blocks])
        blocks = dataclasses.replace(
            planned,
            blocks=tuple(
                dataclasses.replace(b, item=units[b.item].item, slots=tuple(units[b.item].slots[s] for s in b.slots))
                for b in planned.blocks
            ),
            num_items=num_items,
            num_slots=num_slots,
        )
        return PairBatch(input_ids, blocks, name, vision, token_extras)

    def _encode_all(
        self, records: list[PreferenceRecord]
    ) -> tuple[list[EncodedPair], list[int] | None, list[BadRecordError]]:
        if self.on_bad_record == "error":
            return [self.encode(r) for r in records], None, []
        out, kept, skipped = [], [], []
        for i, r in enumerate(records):
            try:
                out.append(self.encode(r))
                kept.append(i)
            except BadRecordError as error:
                skipped.append(error)
        if not out:
            raise BadRecordError(
                None, "empty_batch", f"all {len(records)} records of this batch were bad (first: {skipped[0]})"
            )
        return out, kept, skipped

    # ---- generation ----------------------------------------------------------------------------------

    def generate(
        self, model: Any, prompts: list[str], images: list[list[Any]], *, device: Any = None, **settings: Any
    ) -> Any:
        """New token ids continuing each rendered prompt (see `Family.generate`)."""
        return self.hooks.generate(model, prompts, images, device=device, **settings)


def _choose_layout(supported: tuple[str, ...], attn: str, *, shared_prefix: bool, varlen: bool | None) -> str:
    """`packed` when asked for and exact for the family (flash-attention kernels take no block mask);
    otherwise `varlen` under flash-attention (or when asked for) where exact; otherwise `plain`."""
    flash = attn.startswith("flash")
    if shared_prefix and not flash and "packed" in supported:
        return "packed"
    if (flash if varlen is None else varlen) and "varlen" in supported:
        return "varlen"
    return "plain"


def get_adapter(model: Any, processor: Any, family: str | None = None, **options: Any) -> Adapter:
    """The adapter for `model` (family detected from its config unless given); `options` go to the
    adapter (max_length, padding_side, max_image_pixels, shared_prefix, pack_pairs, head_chunk_size, ...)
    and the family (llava_orig: conv_mode)."""
    base = unwrap_model(model)
    if family is not None and family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; known: {', '.join(FAMILIES)}")
    return Adapter(base, processor, FAMILIES[family] if family is not None else family_for_model(base), **options)
