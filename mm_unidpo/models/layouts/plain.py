"""The plain layout: one sequence a row, [prompt][chosen] rows then [prompt][rejected] rows, padded on
one side. The model's own causal and padding masks apply; the reference every other layout equals."""

from __future__ import annotations

from typing import Any

from .blocks import Block, Blocks

NAME = "plain"


def split(items: list[tuple[int, tuple[int, ...]]]) -> list[tuple[int, int, int, int]]:
    """(item, prompt, response length, slot) per sequence: every item's slot-0 sequence, then slot 1."""
    slots = max((len(r) for _, r in items), default=0)
    return [
        (i, p, responses[s], s) for s in range(slots) for i, (p, responses) in enumerate(items) if s < len(responses)
    ]


def plan(items: list[tuple[int, tuple[int, ...]]], *, padding_side: str = "right", **_: Any) -> Blocks:
    sequences = split(items)
    width = max((p + n for _, p, n, _ in sequences), default=0)
    blocks = [
        Block(row, 0 if padding_side == "right" else width - p - n, p, (n,), item, (slot,))
        for row, (item, p, n, slot) in enumerate(sequences)
    ]
    return Blocks.build(blocks, len(items), max((len(r) for _, r in items), default=1), padding_side)


def attention_inputs(model: Any, blocks: Blocks, *, device: Any, **_: Any) -> dict[str, Any]:
    return {"attention_mask": (blocks.segments(device) != 0).long()}
