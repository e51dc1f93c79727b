"""The one forward: a laid-out batch -> the model -> the LM head at the scored positions -> per-item sums.

    inputs, blocks = forward_inputs(model, batch, family, layout, ...)
    logps = scored_logps(model, inputs, rows, predictors, targets, ...)

The family turns the batch into keyword arguments (splicing image features in where the model does not
do it itself) and positions; the layout adds its masks; the head runs on the scored positions only:
chunked from the final hidden states (head.py), or, with ``head_chunk_size=None`` or a model that
transforms its logits, the model's own head on the columns kept (``logits_to_keep``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .families.base import Family
from .head import final_hidden_states, keeps_its_head, token_logps, token_logps_and_argmax
from .layouts import LAYOUTS, PairBatch


@dataclass
class SequenceLogps:
    chosen_logps: torch.Tensor  # (B,) sums over response tokens
    rejected_logps: torch.Tensor
    chosen_lengths: torch.Tensor  # (B,) response token counts
    rejected_lengths: torch.Tensor


@dataclass(frozen=True)
class ForwardOptions:
    head_chunk_size: int | str | None  # None: materialise the head's logits (the reference path)
    attn_implementation: str
    compute_dtype: torch.dtype
    per_pair_attention: bool = True  # False: packed rows get the dense T x T block mask (a baseline)


def forward_inputs(model: Any, batch: PairBatch, family: Family, options: ForwardOptions) -> tuple[dict[str, Any], Any]:
    """The model's keyword arguments for `batch` and the blocks its positions lie in (after any splicing)."""
    inputs, blocks = family.model_inputs(model, batch)
    positions = family.position_ids(model, batch, blocks)
    if positions is not None:
        inputs["position_ids"] = positions
    inputs.update(LAYOUTS[batch.layout].attention_inputs(
        model, blocks, device=batch.input_ids.device, packed_attention=family.spec.packed_attention and options.per_pair_attention,
        attn_implementation=options.attn_implementation, compute_dtype=options.compute_dtype))
    return inputs, blocks


def scored_logps(model: Any, inputs: dict[str, Any], rows: torch.Tensor, predictors: torch.Tensor,
                 targets: torch.Tensor, family: Family, options: ForwardOptions, *, greedy: bool = False) -> Any:
    """log p(targets) from the model's output at (rows, predictors) on `inputs`; with `greedy`, also
    whether each target is the argmax token."""
    if options.head_chunk_size is not None and not keeps_its_head(model):
        with final_hidden_states(model) as head:
            hidden = model(**inputs, use_cache=False).logits
        picked = hidden[rows, predictors]
        if greedy:
            return token_logps_and_argmax(head, picked, targets, chunk_size=options.head_chunk_size)
        return token_logps(head, picked, targets, chunk_size=options.head_chunk_size)
    if family.spec.takes_logits_to_keep:
        keep, index = torch.unique(predictors, return_inverse=True)
        logits = model(**inputs, use_cache=False, logits_to_keep=keep).logits[rows, index].float()
    else:
        logits = model(**inputs, use_cache=False).logits[rows, predictors].float()
    logps = logits.gather(-1, targets[:, None]).squeeze(-1) - logits.logsumexp(-1)
    return (logps, logits.argmax(-1) == targets) if greedy else logps


def batch_logps(model: Any, batch: PairBatch, family: Family, options: ForwardOptions, *, greedy: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(items, slots) sums of response log-probs and token counts, and with `greedy` whether every token of
    each response is the greedy one."""
    parts = family.forward_parts(batch)
    if parts is not None:  # separate forwards (Family.forward_parts); each holds some items' responses
        results = [batch_logps(model, part, family, options, greedy=greedy) for part in parts]
        sums, counts = sum(r[0] for r in results), sum(r[1] for r in results)
        if not greedy:
            return sums, counts, None
        return sums, counts, torch.stack([r[2] for r in results]).all(0)  # an item's absent parts: True
    inputs, blocks = forward_inputs(model, batch, family, options)
    device = batch.input_ids.device
    source = batch.blocks.scored(device)  # token ids where the batch holds them
    scored = blocks.scored(device) if blocks is not batch.blocks else source  # positions in the model's rows
    targets = batch.input_ids[source.rows, source.columns]
    out = scored_logps(model, inputs, scored.rows, scored.predictors, targets, family, options, greedy=greedy)
    logps, hits = out if greedy else (out, None)
    sums, counts = scored.sums(logps)
    if hits is None:
        return sums, counts, None
    misses, _ = scored.sums((~hits).to(logps.dtype))
    return sums, counts, misses == 0
