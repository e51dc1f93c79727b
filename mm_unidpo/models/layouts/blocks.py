"""The one description of where a batch's sequences lie, shared by every layout, and the batch type.

A *block* is one prompt followed by the responses that share it, at a column of a row:

    plain    one block a row per sequence: [prompt][chosen] rows, then [prompt][rejected] rows, padded
    packed   one block per pair, [prompt][chosen][rejected], blocks back to back in a row
    varlen   one block per sequence, all back to back in one row (flash-attention's varlen kernels)

Inside a block each response attends to the prompt and to itself, and its positions continue from
the prompt's end, so every response is computed as in its own sequence. Each response has an `item`
(the pair, or the prompt of a scored continuation) and a `slot` (0 chosen, 1 rejected); every layout
scores its response tokens through `Blocks.scored` and sums them per (item, slot).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

IGNORE_INDEX = -100
PAD, PROMPT = 0, 1  # segment ids; response k of a block is segment 2 + k (CHOSEN, REJECTED for pairs)
CHOSEN, REJECTED = 2, 3


@dataclass(frozen=True)
class Block:
    row: int
    offset: int  # the column its prompt starts at
    prompt: int  # prompt positions
    responses: tuple[int, ...]  # response lengths, in row order
    item: int  # the pair (or continuation) it belongs to
    slots: tuple[int, ...]  # per response: 0 chosen (or a continuation), 1 rejected

    @property
    def length(self) -> int:
        return self.prompt + sum(self.responses)

    @property
    def end(self) -> int:
        return self.offset + self.length

    def response_spans(self) -> list[tuple[int, int]]:
        """(start column, length) of each response."""
        spans, start = [], self.offset + self.prompt
        for n in self.responses:
            spans.append((start, n))
            start += n
        return spans


@dataclass(frozen=True)
class Blocks:
    blocks: tuple[Block, ...]
    num_rows: int
    width: int
    num_items: int
    num_slots: int  # 2 for pairs, 1 for continuations
    padding_side: str = "right"  # where a row's padding lies

    @classmethod
    def build(cls, blocks: list[Block], num_items: int, num_slots: int, padding_side: str = "right") -> Blocks:
        return cls(
            tuple(blocks),
            max((b.row for b in blocks), default=-1) + 1,
            max((b.end for b in blocks), default=0),
            num_items,
            num_slots,
            padding_side,
        )

    @property
    def tokens(self) -> int:
        return sum(b.length for b in self.blocks)

    def resized(self, prompt_lengths: list[int]) -> Blocks:
        """The same blocks in the same rows and order with other prompt lengths (LLaVA-orig's prompts
        after image splicing); rows padded on the left stay right-aligned."""
        used: dict[int, int] = {}
        out = []
        for b, p in zip(self.blocks, prompt_lengths):
            out.append(dataclasses.replace(b, offset=used.get(b.row, 0), prompt=p))
            used[b.row] = out[-1].end
        width = max(used.values(), default=0)
        if self.padding_side == "left":
            out = [dataclasses.replace(b, offset=b.offset + width - used[b.row]) for b in out]
        return dataclasses.replace(self, blocks=tuple(out), width=width)

    def segments(self, device: Any = None) -> torch.Tensor:
        """(rows, width): PAD, PROMPT, or 2 + k on response k of its block."""
        out = torch.full((self.num_rows, self.width), PAD, dtype=torch.long, device=device)
        for b in self.blocks:
            out[b.row, b.offset : b.offset + b.prompt] = PROMPT
            for k, (start, n) in enumerate(b.response_spans()):
                out[b.row, start : start + n] = 2 + k
        return out

    def block_ids(self, device: Any = None) -> torch.Tensor:
        """(rows, width): the block each column belongs to, -1 on padding."""
        out = torch.full((self.num_rows, self.width), -1, dtype=torch.long, device=device)
        for i, b in enumerate(self.blocks):
            out[b.row, b.offset : b.end] = i
        return out

    def positions(self, device: Any = None) -> torch.Tensor:
        """Text positions: 0.. through each prompt, then every response continues from the prompt's end."""
        out = torch.zeros((self.num_rows, self.width), dtype=torch.long, device=device)
        for b in self.blocks:
            out[b.row, b.offset : b.offset + b.prompt] = torch.arange(b.prompt, device=device)
            for start, n in b.response_spans():
                out[b.row, start : start + n] = b.prompt + torch.arange(n, device=device)
        return out

    def scored(self, device: Any = None) -> ScoredPositions:
        """Every response token, block by block: its row, the column whose output predicts it (the last
        prompt column for a response's first token), its own column, its item and slot."""
        rows: list[int] = []
        predictors: list[int] = []
        columns: list[int] = []
        items: list[int] = []
        slots: list[int] = []
        ranks: list[int] = []
        for b in self.blocks:
            for (start, n), slot in zip(b.response_spans(), b.slots):
                cols = list(range(start, start + n))
                rows += [b.row] * n
                columns += cols
                predictors += [b.offset + b.prompt - 1, *cols[:-1]] if n else []
                items += [b.item] * n
                slots += [slot] * n
                ranks += range(n)

        def t(x: list[int]) -> torch.Tensor:
            return torch.tensor(x, dtype=torch.long, device=device)

        return ScoredPositions(
            t(rows), t(predictors), t(columns), t(items), t(slots), t(ranks), self.num_items, self.num_slots
        )


@dataclass
class ScoredPositions:
    rows: torch.Tensor  # (N,)
    predictors: torch.Tensor  # (N,) the column whose output predicts the token
    columns: torch.Tensor  # (N,) the token's own column
    items: torch.Tensor  # (N,)
    slots: torch.Tensor  # (N,)
    ranks: torch.Tensor  # (N,) the token's index within its response
    num_items: int
    num_slots: int

    def sums(self, token_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(num_items, num_slots) sums of the (N,) per-token values and token counts."""
        index = (self.items * self.num_slots + self.slots).to(token_values.device)
        size = self.num_items * self.num_slots
        sums = torch.zeros(size, dtype=token_values.dtype, device=token_values.device).index_add(0, index, token_values)
        counts = torch.zeros(size, dtype=torch.long, device=index.device).index_add(0, index, torch.ones_like(index))
        return sums.view(self.num_items, self.num_slots), counts.view(self.num_items, self.num_slots)

    def shared_sums(self, token_values: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """(num_items, num_slots) sums over each response's first m tokens, m = its item's shortest response
        (LD-DPO's shared part)."""
        shortest = counts.min(dim=1).values.to(self.items.device)
        inside = (self.ranks < shortest[self.items]).to(token_values.device)
        return self.sums(token_values * inside)[0]


@dataclass
class PairBatch:
    """Token ids laid out by a layout (`layout` names it), with what the forward and the loss need."""

    input_ids: torch.Tensor  # (rows, width)
    blocks: Blocks
    layout: str
    vision: dict[str, torch.Tensor]  # per block, in block order (family.stack_vision)
    token_extras: dict[str, torch.Tensor]  # (rows, width), set on prompt tokens
    score_chosen: torch.Tensor | None = None
    score_rejected: torch.Tensor | None = None
    ids: list[str | None] = field(default_factory=list)
    indices: list[int | None] = field(default_factory=list)
    truncated: list[bool] = field(default_factory=list)  # per item: its responses were cut at max_length
    kept: list[int] | None = None  # with on_bad_record="skip": positions of the input records kept
    skipped: list[Any] = field(default_factory=list)  # the BadRecordErrors of the records left out

    @property
    def num_pairs(self) -> int:
        return self.blocks.num_items

    @property
    def num_truncated(self) -> int:
        return sum(self.truncated)

    @property
    def segments(self) -> torch.Tensor:
        return self.blocks.segments(self.input_ids.device)

    @property
    def attention_mask(self) -> torch.Tensor:
        """The 2-D mask of real tokens."""
        return (self.segments != PAD).long()

    @property
    def position_ids(self) -> torch.Tensor:
        return self.blocks.positions(self.input_ids.device)

    @property
    def labels(self) -> torch.Tensor:
        """(rows, width): each response token's id at its column, IGNORE_INDEX elsewhere."""
        labels = torch.full_like(self.input_ids, IGNORE_INDEX)
        scored = self.blocks.scored(self.input_ids.device)
        labels[scored.rows, scored.columns] = self.input_ids[scored.rows, scored.columns]
        return labels

    def block_tokens(self, i: int, segment: int) -> list[int]:
        """Block i's PROMPT tokens or response 2 + k's tokens."""
        b = self.blocks.blocks[i]
        start, n = (b.offset, b.prompt) if segment == PROMPT else b.response_spans()[segment - 2]
        return self.input_ids[b.row, start : start + n].tolist()

    def pair_tokens(self, i: int, segment: int) -> list[int]:
        """Pair i's PROMPT, CHOSEN or REJECTED token ids, whatever the layout."""
        for j, b in enumerate(self.blocks.blocks):
            if b.item == i and (segment == PROMPT or segment - 2 in b.slots):
                return self.block_tokens(j, PROMPT if segment == PROMPT else 2 + b.slots.index(segment - 2))
        raise IndexError(f"no segment {segment} for pair {i}")

    def prompts(self) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Each block's prompt as a left-padded (blocks, P) matrix (ids, mask, per-token extras): the
        input of the families' prompt-only computations (3-D rope indices, LLaVA-orig's image splicing)."""
        blocks = self.blocks.blocks
        width = max((b.prompt for b in blocks), default=0)
        ids = torch.zeros((len(blocks), width), dtype=torch.long, device=self.input_ids.device)
        mask = torch.zeros_like(ids)
        extras = {k: torch.zeros_like(ids) for k in self.token_extras}
        for i, b in enumerate(blocks):
            ids[i, width - b.prompt :] = self.input_ids[b.row, b.offset : b.offset + b.prompt]
            mask[i, width - b.prompt :] = 1
            for k, v in self.token_extras.items():
                extras[k][i, width - b.prompt :] = v[b.row, b.offset : b.offset + b.prompt]
        return ids, mask, extras

    def to(self, device: torch.device | str) -> PairBatch:
        def move(x: Any) -> Any:
            return x.to(device) if isinstance(x, torch.Tensor) else x

        return dataclasses.replace(
            self,
            input_ids=move(self.input_ids),
            vision={k: move(v) for k, v in self.vision.items()},
            token_extras={k: move(v) for k, v in self.token_extras.items()},
            score_chosen=move(self.score_chosen),
            score_rejected=move(self.score_rejected),
        )


def fill_rows(
    blocks: Blocks,
    tokens: list[tuple[list[int], list[list[int]]]],
    pad_token_id: int,
    extras: list[dict[str, list[int]]],
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The (rows, width) ids of `blocks`, block i holding prompt `tokens[i][0]` and responses `tokens[i][1]`,
    and each per-prompt-token extra (zero elsewhere)."""
    input_ids = torch.full((blocks.num_rows, blocks.width), pad_token_id, dtype=torch.long)
    keys = sorted({k for e in extras for k in e})
    out = {k: torch.zeros((blocks.num_rows, blocks.width), dtype=torch.long) for k in keys}
    for b, (prompt, responses), extra in zip(blocks.blocks, tokens, extras):
        ids = list(prompt) + [t for r in responses for t in r]
        input_ids[b.row, b.offset : b.end] = torch.tensor(ids, dtype=torch.long)
        for k in keys:
            out[k][b.row, b.offset : b.offset + b.prompt] = torch.tensor(extra[k], dtype=torch.long)
    return input_ids, out


def pad_rows(rows: list[list[int]], pad_value: int, side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows padded to one width on `side`: (ids, attention mask), both (len(rows), width) long."""
    if side not in ("left", "right"):
        raise ValueError(f"padding side must be 'left' or 'right', got {side!r}")
    width = max((len(r) for r in rows), default=0)
    ids = torch.full((len(rows), width), pad_value, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        start = 0 if side == "right" else width - len(row)
        ids[i, start : start + len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, start : start + len(row)] = 1
    return ids, mask
