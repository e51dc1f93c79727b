"""The one forward: a laid-out batch -> the model -> the LM head at the scored positions -> per-item sums.

    inputs, blocks = forward_inputs(model, batch, family, layout, ...)
    logps = scored_logps(model, inputs, rows, predictors, targets, ...)

The family turns the batch into keyword arguments (splicing image features in where the model does not
do it itself) and positions; the layout adds its masks; the head runs on the scored positions only:
chunked from the final hidden states inside the head's own call (head.py), or, with ``head_chunk_size=None`` or a model that
transforms its logits, the model's own head on the columns kept (``logits_to_keep``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .families.base import Family
from .head import keeps_its_head, scored_head
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
        with scored_head(model, rows, predictors, targets, chunk_size=options.head_chunk_size, greedy=greedy) as out:
            # What the model returns, not what the head computed: a wrapper may have hooked the head's output
            # into the backward (ZeRO-3 re-gathers the head's weight there).
            logps = model(**inputs, use_cache=False).logits
        if out.logps is None or logps.shape != out.logps.shape:
            raise RuntimeError(f"{type(model).__name__} changed its LM head's output (shape {tuple(logps.shape)}): "
                               f"use model.head_chunk_size: null")
        return (logps, out.greedy) if greedy else logps
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
