"""The one forward: a laid-out batch -> the model -> the LM head at the scored positions -> per-item sums.

    inputs, blocks = forward_inputs(model, batch, family, layout, ...)
    logps = scored_logps(model, inputs, rows, predictors, targets, ...)

The family turns the batch into keyword arguments (splicing image features in where the model does not
do it itself) and positions; the layout adds its masks; the head runs on the scored positions only:
chunked from the final hidden states inside the head's own call (head.py), or, with
``head_chunk_size=None`` or a model that transforms its logits, the model's own head on the columns kept
(``logits_to_keep``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .families.base import Family
from .head import ScoredHead, keeps_its_head, log_sum_sq_probs, scored_head
from .layouts import LAYOUTS, PairBatch
from .token_weights import token_weights


@dataclass
class SequenceLogps:
    chosen_logps: torch.Tensor  # (B,) sums over response tokens
    rejected_logps: torch.Tensor
    chosen_lengths: torch.Tensor  # (B,) response token counts
    rejected_lengths: torch.Tensor
    # LD-DPO: the same sums over each response's first min(|y_w|, |y_l|) tokens
    chosen_shared: torch.Tensor | None = None
    rejected_shared: torch.Tensor | None = None
    # WPO: Σ_t log Σ_v p(v | y_<t)² over each response (no gradient), when asked for
    chosen_log_sum_sq_probs: torch.Tensor | None = None
    rejected_log_sum_sq_probs: torch.Tensor | None = None
    # the image-side terms: the chosen response's sum under the contrast image (slot 2), when scored
    chosen_contrast: torch.Tensor | None = None


@dataclass
class ItemSums:
    """Per (item, slot) sums of a batch's scored tokens."""

    logps: torch.Tensor
    counts: torch.Tensor
    shared: torch.Tensor  # over each response's first (shortest response of its item) tokens
    greedy: torch.Tensor | None = None  # every token the argmax one
    log_sum_sq: torch.Tensor | None = None


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
    inputs.update(
        LAYOUTS[batch.layout].attention_inputs(
            model,
            blocks,
            device=batch.input_ids.device,
            packed_attention=family.spec.packed_attention and options.per_pair_attention,
            attn_implementation=options.attn_implementation,
            compute_dtype=options.compute_dtype,
        )
    )
    return inputs, blocks


def scored_logps(
    model: Any,
    inputs: dict[str, Any],
    rows: torch.Tensor,
    predictors: torch.Tensor,
    targets: torch.Tensor,
    family: Family,
    options: ForwardOptions,
    *,
    greedy: bool = False,
    log_sum_sq: bool = False,
) -> ScoredHead:
    """log p(targets) from the model's output at (rows, predictors) on `inputs`; with `greedy`, also
    whether each target is the argmax token; with `log_sum_sq`, log Σ_v p(v)² at each position."""
    if options.head_chunk_size is not None and not keeps_its_head(model):
        with scored_head(
            model, rows, predictors, targets, chunk_size=options.head_chunk_size, greedy=greedy, log_sum_sq=log_sum_sq
        ) as out:
            # What the model returns, not what the head computed: a wrapper may have hooked the head's output
            # into the backward (ZeRO-3 re-gathers the head's weight there).
            logps = model(**inputs, use_cache=False).logits
        if out.logps is None or logps.shape != out.logps.shape:
            raise RuntimeError(
                f"{type(model).__name__} changed its LM head's output (shape {tuple(logps.shape)}): "
                f"use model.head_chunk_size: null"
            )
        return ScoredHead(logps, out.greedy, out.log_sum_sq)
    if family.spec.takes_logits_to_keep:
        keep, index = torch.unique(predictors, return_inverse=True)
        logits = model(**inputs, use_cache=False, logits_to_keep=keep).logits[rows, index].float()
    else:
        logits = model(**inputs, use_cache=False).logits[rows, predictors].float()
    logps = logits.gather(-1, targets[:, None]).squeeze(-1) - logits.logsumexp(-1)
    return ScoredHead(
        logps, logits.argmax(-1) == targets if greedy else None, log_sum_sq_probs(logits) if log_sum_sq else None
    )


def batch_logps(
    model: Any,
    batch: PairBatch,
    family: Family,
    options: ForwardOptions,
    *,
    greedy: bool = False,
    log_sum_sq: bool = False,
    token_weight: float | None = None,
) -> ItemSums:
    """(items, slots) sums of response log-probs, token counts and the LD-DPO shared sums; with `greedy`
    whether every token of each response is the greedy one; with `log_sum_sq` WPO's Σ log Σ_v p(v)²;
    with `token_weight` the sums weighted by DDPO's token weights (token_weights.py)."""
    parts = family.forward_parts(batch)
    if parts is not None:  # separate forwards (Family.forward_parts); each holds some items' responses whole
        results = [
            batch_logps(model, part, family, options, greedy=greedy, log_sum_sq=log_sum_sq, token_weight=token_weight)
            for part in parts
        ]
        total = ItemSums(
            sum(r.logps for r in results),  # type: ignore[arg-type]
            sum(r.counts for r in results),  # type: ignore[arg-type]
            sum(r.shared for r in results),  # type: ignore[arg-type]
        )
        if greedy:  # an item's absent parts: True
            total.greedy = torch.stack([r.greedy for r in results if r.greedy is not None]).all(0)
        if log_sum_sq:
            total.log_sum_sq = sum(r.log_sum_sq for r in results if r.log_sum_sq is not None)  # type: ignore[assignment]
        return total
    inputs, blocks = forward_inputs(model, batch, family, options)
    device = batch.input_ids.device
    source = batch.blocks.scored(device)  # token ids where the batch holds them
    scored = blocks.scored(device) if blocks is not batch.blocks else source  # positions in the model's rows
    targets = batch.input_ids[source.rows, source.columns]
    out = scored_logps(
        model, inputs, scored.rows, scored.predictors, targets, family, options, greedy=greedy, log_sum_sq=log_sum_sq
    )
    assert out.logps is not None
    values = out.logps
    if token_weight is not None:  # the same tokens as `targets`, in the same order
        values = values * token_weights(source, targets, token_weight).to(values.dtype)
    sums, counts = scored.sums(values)
    result = ItemSums(sums, counts, scored.shared_sums(values, counts))
    if out.greedy is not None:
        result.greedy = scored.sums((~out.greedy).to(out.logps.dtype))[0] == 0
    if out.log_sum_sq is not None:
        result.log_sum_sq = scored.sums(out.log_sum_sq)[0]
    return result
