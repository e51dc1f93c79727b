"""The padding-free plain layout for flash-attention's varlen kernels, which take sequence boundaries
(``cu_seq_lens``) but no mask: the plain layout's sequences back to back in one row, positions restarting
per sequence (the prompt is computed once per response, as in the plain layout). 1-D positions only."""

from __future__ import annotations

from typing import Any

import torch

from .blocks import Block, Blocks
from .plain import split

NAME = "varlen"


def plan(items: list[tuple[int, tuple[int, ...]]], **_: Any) -> Blocks:
    blocks, used = [], 0
    for item, p, n, slot in split(items):
        blocks.append(Block(0, used, p, (n,), item, (slot,)))
        used += p + n
    return Blocks.build(blocks, len(items), max((len(r) for _, r in items), default=1))


def attention_inputs(model: Any, blocks: Blocks, *, device: Any, **_: Any) -> dict[str, Any]:
    """The keyword arguments transformers hands to flash-attention's varlen kernel."""
    bounds = torch.tensor([0] + [b.end for b in blocks.blocks], dtype=torch.int32, device=device)
    longest = max((b.length for b in blocks.blocks), default=0)
    return {"cu_seq_lens_q": bounds, "cu_seq_lens_k": bounds, "max_length_q": longest, "max_length_k": longest}
