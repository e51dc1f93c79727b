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
cannot take that (eager attention, llava-torch's forward) the same pattern is a dense block mask. The
LM head runs only on the scored positions (head.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from .batches import pair_scores

PAD, PROMPT, CHOSEN, REJECTED = 0, 1, 2, 3


@dataclass(frozen=True)
class PackedLayout:
    """Where each pair lies: its row, the column its prompt starts at, and its three segment lengths."""

    row: tuple[int, ...]
    offset: tuple[int, ...]
    prompt: tuple[int, ...]
    chosen: tuple[int, ...]
    rejected: tuple[int, ...]
    num_rows: int
    width: int

    @classmethod
    def plan(cls, lengths: list[tuple[int, int, int]], max_row_tokens: int | None = None) -> "PackedLayout":
        """Pairs in order, next-fit: a pair starts a new row when it would take its row past
        `max_row_tokens` (None: one row; 0: one pair per row). Order is kept, so vision tensors in record
        order are also in token order."""
        rows, offsets, used, row = [], [], 0, 0
        for p, c, r in lengths:
            n = p + c + r
            if used and max_row_tokens is not None and used + n > max_row_tokens:
                row, used = row + 1, 0
            rows.append(row)
            offsets.append(used)
            used += n
        ends = [o + p + c + r for o, (p, c, r) in zip(offsets, lengths)]
        num_rows = (rows[-1] + 1) if rows else 0
        width = max(ends) if ends else 0
        p, c, r = (tuple(x) for x in zip(*lengths)) if lengths else ((), (), ())
        return cls(tuple(rows), tuple(offsets), p, c, r, num_rows, width)

    @property
    def num_pairs(self) -> int:
        return len(self.row)

    def resized(self, prompt_lengths: list[int]) -> "PackedLayout":
        """The same rows and pair order with other prompt lengths (LLaVA's prompts after image splicing)."""
        offsets, used = [], {}
        for row, p, c, r in zip(self.row, prompt_lengths, self.chosen, self.rejected):
            offsets.append(used.get(row, 0))
            used[row] = offsets[-1] + p + c + r
        return dataclasses.replace(self, offset=tuple(offsets), prompt=tuple(prompt_lengths),
                                   width=max(used.values(), default=0))

    def pair_spans(self) -> list[tuple[int, int, int, int, int]]:
        """(row, start, prompt length, chosen length, rejected length) per pair."""
        return list(zip(self.row, self.offset, self.prompt, self.chosen, self.rejected))

    @property
    def tokens(self) -> int:
        return sum(self.prompt) + sum(self.chosen) + sum(self.rejected)

    def segments(self, device=None) -> torch.Tensor:
        out = torch.full((self.num_rows, self.width), PAD, dtype=torch.long, device=device)
        for row, o, p, c, r in self.pair_spans():
            out[row, o:o + p], out[row, o + p:o + p + c], out[row, o + p + c:o + p + c + r] = PROMPT, CHOSEN, REJECTED
        return out

    def pair_ids(self, device=None) -> torch.Tensor:
        """(rows, width): the pair each column belongs to, -1 on padding."""
        out = torch.full((self.num_rows, self.width), -1, dtype=torch.long, device=device)
        for i, (row, o, p, c, r) in enumerate(self.pair_spans()):
            out[row, o:o + p + c + r] = i
        return out

    def positions(self, device=None) -> torch.Tensor:
        """Text positions: 0.. through each prompt, then both responses continue from the prompt's end."""
        out = torch.zeros((self.num_rows, self.width), dtype=torch.long, device=device)
        for row, o, p, c, r in self.pair_spans():
            out[row, o:o + p] = torch.arange(p, device=device)
            out[row, o + p:o + p + c] = p + torch.arange(c, device=device)
            out[row, o + p + c:o + p + c + r] = p + torch.arange(r, device=device)
        return out

    def scored(self, device=None) -> "ScoredPositions":
        """Every response token, pair by pair (chosen tokens, then rejected): its row, the column whose
        output predicts it (the last prompt column for each response's first token), its own column."""
        rows, predictors, columns, pairs, chosen = [], [], [], [], []
        for i, (row, o, p, c, r) in enumerate(self.pair_spans()):
            for start, n, is_chosen in ((o + p, c, True), (o + p + c, r, False)):
                cols = list(range(start, start + n))
                rows += [row] * n
                columns += cols
                predictors += [o + p - 1] + cols[:-1] if n else []
                pairs += [i] * n
                chosen += [is_chosen] * n
        t = lambda x, dtype=torch.long: torch.tensor(x, dtype=dtype, device=device)  # noqa: E731
        return ScoredPositions(t(rows), t(predictors), t(columns), t(pairs), t(chosen, torch.bool), self.num_pairs)


@dataclass
class ScoredPositions:
    rows: torch.Tensor  # (N,)
    predictors: torch.Tensor  # (N,) the column whose output predicts the token
    columns: torch.Tensor  # (N,) the token's own column
    pairs: torch.Tensor  # (N,) its pair
    is_chosen: torch.Tensor  # (N,) bool
    num_pairs: int

    def sums(self, token_logps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-pair (chosen sum, chosen count, rejected sum, rejected count) of the (N,) token log-probs."""
        out = []
        for mask in (self.is_chosen, ~self.is_chosen):
            pairs = self.pairs[mask]
            sums = torch.zeros(self.num_pairs, dtype=token_logps.dtype, device=token_logps.device)
            sums = sums.index_add(0, pairs, token_logps[mask])
            counts = torch.zeros(self.num_pairs, dtype=torch.long, device=pairs.device).index_add(
                0, pairs, torch.ones_like(pairs))
            out += [sums, counts]
        return tuple(out)


@dataclass
class PackedPairBatch:
    input_ids: torch.Tensor  # (rows, width)
    layout: PackedLayout
    vision: dict[str, torch.Tensor]  # one copy per pair, in pair order
    token_extras: dict[str, torch.Tensor]  # (rows, width), set on prompt tokens
    score_chosen: torch.Tensor | None
    score_rejected: torch.Tensor | None
    ids: list
    indices: list
    num_truncated: int = 0
    kept: list[int] | None = None
    segments: torch.Tensor = field(init=False)
    position_ids: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.segments = self.layout.segments(self.input_ids.device)
        self.position_ids = self.layout.positions(self.input_ids.device)

    @property
    def num_pairs(self) -> int:
        return self.layout.num_pairs

    @property
    def attention_mask(self) -> torch.Tensor:
        """The 2-D mask of real tokens."""
        return (self.segments != PAD).long()

    def pair_tokens(self, i: int, segment: int) -> list[int]:
        """Pair i's PROMPT, CHOSEN or REJECTED token ids."""
        row, o, p, c, r = self.layout.pair_spans()[i]
        start, end = {PROMPT: (o, o + p), CHOSEN: (o + p, o + p + c), REJECTED: (o + p + c, o + p + c + r)}[segment]
        return self.input_ids[row, start:end].tolist()

    def prompts(self) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Each pair's prompt as a left-padded (B, P) matrix (ids, mask, per-token extras): the input of
        the families' prompt-only computations (3-D rope indices, LLaVA's image splicing)."""
        width = max(self.layout.prompt, default=0)
        b = self.num_pairs
        ids = torch.zeros((b, width), dtype=torch.long, device=self.input_ids.device)
        mask = torch.zeros_like(ids)
        extras = {k: torch.zeros_like(ids) for k in self.token_extras}
        for i, (row, o, p, _, _) in enumerate(self.layout.pair_spans()):
            ids[i, width - p:] = self.input_ids[row, o:o + p]
            mask[i, width - p:] = 1
            for k, v in self.token_extras.items():
                extras[k][i, width - p:] = v[row, o:o + p]
        return ids, mask, extras

    def to(self, device: torch.device | str) -> "PackedPairBatch":
        def move(x):
            return x.to(device) if isinstance(x, torch.Tensor) else x
        batch = dataclasses.replace(
            self, input_ids=move(self.input_ids), vision={k: move(v) for k, v in self.vision.items()},
            token_extras={k: move(v) for k, v in self.token_extras.items()},
            score_chosen=move(self.score_chosen), score_rejected=move(self.score_rejected))
        return batch


def pack(encoded: list, pad_token_id: int, vision: dict[str, torch.Tensor], *,
         max_row_tokens: int | None = None) -> PackedPairBatch:
    """Lay encoded pairs (see `EncodedPair`) out back to back (`PackedLayout.plan`)."""
    layout = PackedLayout.plan([(len(e.prompt_ids), len(e.chosen_ids), len(e.rejected_ids)) for e in encoded],
                               max_row_tokens)
    input_ids = torch.full((layout.num_rows, layout.width), pad_token_id, dtype=torch.long)
    extra_keys = sorted({k for e in encoded for k in e.token_extras})
    extras = {k: torch.zeros((layout.num_rows, layout.width), dtype=torch.long) for k in extra_keys}
    for e, (row, o, p, c, r) in zip(encoded, layout.pair_spans()):
        input_ids[row, o:o + p + c + r] = torch.tensor(e.prompt_ids + e.chosen_ids + e.rejected_ids)
        for k in extra_keys:
            extras[k][row, o:o + p] = torch.tensor(e.token_extras[k])
    score_chosen, score_rejected = pair_scores(encoded)
    return PackedPairBatch(
        input_ids=input_ids, layout=layout, vision=vision, token_extras=extras, score_chosen=score_chosen,
        score_rejected=score_rejected,
        ids=[e.record.id for e in encoded], indices=[e.record.index for e in encoded],
        num_truncated=sum(e.truncated for e in encoded))


def attention_allowed(layout: PackedLayout, device=None) -> torch.Tensor:
    """(rows, 1, T, T) boolean mask, True = attend: causal, within the pair, a response sees its prompt and itself.
    The dense form of what attention.py computes block by block (O(T²) memory: the fallback)."""
    t = layout.width
    segments, pairs = layout.segments(device), layout.pair_ids(device)
    causal = torch.ones(t, t, dtype=torch.bool, device=device).tril()
    q, k = segments[:, :, None], segments[:, None, :]
    same_pair = pairs[:, :, None] == pairs[:, None, :]
    allowed = causal & same_pair & (k != PAD) & ((k == PROMPT) | (k == q))
    # A padding query attends to itself only, so no row of the softmax is empty (which would give NaN).
    allowed = allowed | torch.eye(t, dtype=torch.bool, device=device)
    return allowed[:, None]


def attention_bias(layout: PackedLayout, dtype: torch.dtype, device=None) -> torch.Tensor:
    """The same mask as an additive bias (0 / most negative), for attention implementations that add it."""
    allowed = attention_allowed(layout, device)
    return torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill_(~allowed, torch.finfo(dtype).min)


@dataclass
class VarlenPairBatch:
    """Padding-free plain layout for flash-attention's varlen kernels, which take sequence boundaries
    (``cu_seq_lens``) but no mask: the 2B sequences [prompt][chosen]… then [prompt][rejected]… back to
    back in one row, positions restarting per sequence (the prompt is computed twice, as in the plain layout)."""

    input_ids: torch.Tensor  # (1, N)
    position_ids: torch.Tensor  # (1, N)
    labels: torch.Tensor  # (1, N): response tokens, -100 elsewhere
    sequence: torch.Tensor  # (N,): which of the 2B sequences (chosen 0..B-1, rejected B..2B-1)
    cu_seq_lens: torch.Tensor  # (2B + 1,) int32 boundaries
    max_length: int
    vision: dict[str, torch.Tensor]  # two copies per pair: chosen sequences' images, then rejected ones'
    token_extras: dict[str, torch.Tensor]  # (1, N)
    score_chosen: torch.Tensor | None
    score_rejected: torch.Tensor | None
    ids: list
    indices: list
    num_truncated: int = 0
    kept: list[int] | None = None

    @property
    def num_pairs(self) -> int:
        return (self.cu_seq_lens.numel() - 1) // 2

    def flash_kwargs(self) -> dict[str, object]:
        """The keyword arguments transformers hands to flash-attention's varlen kernel."""
        return {"cu_seq_lens_q": self.cu_seq_lens, "cu_seq_lens_k": self.cu_seq_lens,
                "max_length_q": self.max_length, "max_length_k": self.max_length}

    def to(self, device: torch.device | str) -> "VarlenPairBatch":
        def move(x):
            return x.to(device) if isinstance(x, torch.Tensor) else x
        return dataclasses.replace(self, **{f.name: move(getattr(self, f.name)) for f in dataclasses.fields(self)
                                            if isinstance(getattr(self, f.name), torch.Tensor)},
                                   vision={k: move(v) for k, v in self.vision.items()},
                                   token_extras={k: move(v) for k, v in self.token_extras.items()})


def pack_sequences(encoded: list, vision: dict[str, torch.Tensor]) -> VarlenPairBatch:
    sequences = [(e.prompt_ids, e.chosen_ids, e) for e in encoded] + [(e.prompt_ids, e.rejected_ids, e) for e in encoded]
    ids, labels, positions, owner, bounds = [], [], [], [], [0]
    extra_keys = sorted({k for e in encoded for k in e.token_extras})
    extras: dict[str, list[int]] = {k: [] for k in extra_keys}
    for s, (prompt, response, e) in enumerate(sequences):
        ids += prompt + response
        labels += [-100] * len(prompt) + response
        positions += range(len(prompt) + len(response))
        owner += [s] * (len(prompt) + len(response))
        bounds.append(len(ids))
        for k in extra_keys:
            extras[k] += e.token_extras[k] + [0] * len(response)
    score_chosen, score_rejected = pair_scores(encoded)
    row = lambda x: torch.tensor([x], dtype=torch.long)  # noqa: E731
    return VarlenPairBatch(
        input_ids=row(ids), position_ids=row(positions), labels=row(labels), sequence=torch.tensor(owner),
        cu_seq_lens=torch.tensor(bounds, dtype=torch.int32),
        max_length=max(b - a for a, b in zip(bounds, bounds[1:])), vision=vision,
        token_extras={k: row(v) for k, v in extras.items()},
        score_chosen=score_chosen, score_rejected=score_rejected, ids=[e.record.id for e in encoded],
        indices=[e.record.index for e in encoded], num_truncated=sum(e.truncated for e in encoded))
