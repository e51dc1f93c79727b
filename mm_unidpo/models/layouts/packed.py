"""Padding-free packing with a shared prefix: every pair `[prompt + images][chosen][rejected]`, back to back.

A preference pair's two sequences share their prompt, and in a VLM the prompt is mostly image tokens.
Peer trainers run it twice (and twice more for the reference) and pad every sequence to the longest in
the micro-batch. Here a micro-batch of B pairs becomes one row (or a few, under a token budget) of

    [p₁][c₁][r₁][p₂][c₂][r₂] …        no padding between pairs; rows padded at their end only

in which each response attends to its own pair's prompt and to itself only (the rejected span never
sees the chosen one, no pair sees another), with positions that restart at every pair and continue
from the prompt into each response, so every response is computed exactly as in its own sequence
(prefix sharing: Wang & Hegde, arXiv 2410.20305; packing: the block-diagonal "padding-free" layout).
Attention runs per pair over its own blocks (attention.py), never over the whole row; where a model
cannot take that (eager attention, llava-torch's forward) the same pattern is a dense block mask.

Exact only where a token's state depends on the tokens it attends to and nothing else: a family with
recurrent (linear-attention) layers or attention across a row does not declare this layout.
"""

from __future__ import annotations

from typing import Any

import torch

from ..attention import NAME as PACKED_ATTENTION
from ..attention import packed_mask_placeholder, use_packed_attention
from .blocks import PAD, PROMPT, Block, Blocks

NAME = "packed"


def plan(items: list[tuple[int, tuple[int, ...]]], *, max_row_tokens: int | None = None, **_: Any) -> Blocks:
    """Pairs in order, next-fit: a pair starts a new row when it would take its row past
    `max_row_tokens` (None: one row; 0: one pair per row). Order is kept, so vision tensors in record
    order are also in token order."""
    blocks, used, row = [], 0, 0
    for item, (p, responses) in enumerate(items):
        n = p + sum(responses)
        if used and max_row_tokens is not None and used + n > max_row_tokens:
            row, used = row + 1, 0
        blocks.append(Block(row, used, p, tuple(responses), item, tuple(range(len(responses)))))
        used += n
    return Blocks.build(blocks, len(items), max((len(r) for _, r in items), default=1))


def attention_inputs(
    model: Any,
    blocks: Blocks,
    *,
    device: Any,
    packed_attention: bool,
    attn_implementation: str,
    compute_dtype: torch.dtype,
    **_: Any,
) -> dict[str, Any]:
    if packed_attention and use_packed_attention(model):  # per-pair attention blocks
        return {"attention_mask": packed_mask_placeholder(blocks, device), "packed_layout": blocks}
    if attn_implementation in ("sdpa", PACKED_ATTENTION):  # a dense boolean mask, whatever the autocast dtype
        return {"attention_mask": attention_allowed(blocks, device)}
    return {"attention_mask": attention_bias(blocks, compute_dtype, device)}


def attention_allowed(blocks: Blocks, device: Any = None) -> torch.Tensor:
    """(rows, 1, T, T) boolean mask, True = attend: causal, within the block, a response sees its prompt
    and itself. The dense form of what attention.py computes block by block (O(T²) memory: the fallback)."""
    t = blocks.width
    segments, owner = blocks.segments(device), blocks.block_ids(device)
    causal = torch.ones(t, t, dtype=torch.bool, device=device).tril()
    q, k = segments[:, :, None], segments[:, None, :]
    same_block = owner[:, :, None] == owner[:, None, :]
    allowed = causal & same_block & (k != PAD) & ((k == PROMPT) | (k == q))
    # A padding query attends to itself only, so no row of the softmax is empty (which would give NaN).
    allowed = allowed | torch.eye(t, dtype=torch.bool, device=device)
    return allowed[:, None]


def attention_bias(blocks: Blocks, dtype: torch.dtype, device: Any = None) -> torch.Tensor:
    """The same mask as an additive bias (0 / most negative), for attention implementations that add it."""
    allowed = attention_allowed(blocks, device)
    return torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill_(~allowed, torch.finfo(dtype).min)
