"""Batch types of the adapter contract and the plain layout: two padded rows per pair.

    pad_pairs(encoded, pad_token_id, "right", vision)   # PairBatch: chosen rows 0..B-1, rejected rows B..2B-1

The packed layouts (one row of back-to-back pairs; the padding-free plain layout for varlen kernels) are
in packed.py. Whatever the layout, a response token at position t + 1 is scored from the output at t.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from mm_unidpo.data.records import PreferenceRecord

IGNORE_INDEX = -100


@dataclass
class EncodedPair:
    """One record tokenized: the shared prompt (image tokens expanded) and both responses."""

    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    vision: dict[str, torch.Tensor]  # processor outputs for this record's images (per image, dim 0)
    token_extras: dict[str, list[int]]  # per-prompt-token side inputs (e.g. mm_token_type_ids)
    truncated: bool
    record: PreferenceRecord


@dataclass
class PairBatch:
    """2B rows: chosen sequences 0..B-1, then rejected sequences B..2B-1."""

    input_ids: torch.Tensor  # (2B, T)
    attention_mask: torch.Tensor  # (2B, T)
    labels: torch.Tensor  # (2B, T); IGNORE_INDEX on prompt, image and padding positions
    vision: dict[str, torch.Tensor]  # already laid out for the 2B rows
    token_extras: dict[str, torch.Tensor]  # (2B, T) each
    score_chosen: torch.Tensor | None
    score_rejected: torch.Tensor | None
    ids: list[str | None]
    indices: list[int | None]
    num_truncated: int = 0
    kept: list[int] | None = None  # with on_bad_record="skip": positions of the input records kept

    @property
    def num_pairs(self) -> int:
        return self.input_ids.shape[0] // 2

    def to(self, device: torch.device | str) -> "PairBatch":
        def move(x):
            return x.to(device) if isinstance(x, torch.Tensor) else x
        return dataclasses.replace(
            self, input_ids=move(self.input_ids), attention_mask=move(self.attention_mask),
            labels=move(self.labels), vision={k: move(v) for k, v in self.vision.items()},
            token_extras={k: move(v) for k, v in self.token_extras.items()},
            score_chosen=move(self.score_chosen), score_rejected=move(self.score_rejected))


@dataclass
class SequenceLogps:
    chosen_logps: torch.Tensor  # (B,) sums over response tokens
    rejected_logps: torch.Tensor
    chosen_lengths: torch.Tensor  # (B,) response token counts
    rejected_lengths: torch.Tensor


def pair_scores(encoded: list[EncodedPair]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The pairs' quality scores as (B,) float32 tensors, or (None, None) unless every pair has both."""
    scores = [(e.record.score_chosen, e.record.score_rejected) for e in encoded]
    if not all(sc is not None and sr is not None for sc, sr in scores):
        return None, None
    return (torch.tensor([s[0] for s in scores], dtype=torch.float32),
            torch.tensor([s[1] for s in scores], dtype=torch.float32))


def pad_pairs(encoded: list[EncodedPair], pad_token_id: int, padding_side: str,
              vision: dict[str, torch.Tensor]) -> PairBatch:
    """The plain layout: [prompt][chosen] rows, then [prompt][rejected] rows, padded on `padding_side`."""
    rows = [(e.prompt_ids, e.chosen_ids, e) for e in encoded] + [(e.prompt_ids, e.rejected_ids, e) for e in encoded]
    width = max(len(p) + len(r) for p, r, _ in rows)
    n = len(rows)
    input_ids = torch.full((n, width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((n, width), dtype=torch.long)
    labels = torch.full((n, width), IGNORE_INDEX, dtype=torch.long)
    extra_keys = sorted({k for e in encoded for k in e.token_extras})
    extras = {k: torch.zeros((n, width), dtype=torch.long) for k in extra_keys}
    for i, (prompt, response, e) in enumerate(rows):
        length = len(prompt) + len(response)
        start = 0 if padding_side == "right" else width - length
        input_ids[i, start:start + length] = torch.tensor(prompt + response)
        attention_mask[i, start:start + length] = 1
        labels[i, start + len(prompt):start + length] = torch.tensor(response)
        for k in extra_keys:
            extras[k][i, start:start + len(prompt)] = torch.tensor(e.token_extras[k])
    score_chosen, score_rejected = pair_scores(encoded)
    return PairBatch(input_ids=input_ids, attention_mask=attention_mask, labels=labels, vision=vision,
                     token_extras=extras, score_chosen=score_chosen, score_rejected=score_rejected,
                     ids=[e.record.id for e in encoded], indices=[e.record.index for e in encoded],
                     num_truncated=sum(e.truncated for e in encoded))


def scored_targets(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For every labelled position t + 1 (label != IGNORE_INDEX): its row, the predicting column t, the label."""
    rows, cols = torch.nonzero(labels[:, 1:] != IGNORE_INDEX, as_tuple=True)
    return rows, cols, labels[rows, cols + 1]


def per_row_sums(token_logps: torch.Tensor, rows: torch.Tensor, num_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    rows = rows.to(token_logps.device)
    sums = torch.zeros(num_rows, dtype=token_logps.dtype, device=token_logps.device).index_add(0, rows, token_logps)
    counts = torch.zeros(num_rows, dtype=torch.long, device=rows.device).index_add(0, rows, torch.ones_like(rows))
    return sums, counts


def response_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum and count of log p(label) per row from full logits (the materialised reference computation):
    logits at position t predict the token at t + 1; float32 log-softmax at labelled positions only."""
    rows, predictors, targets = scored_targets(labels)
    scored = logits[rows, predictors].float()
    return per_row_sums(scored.gather(-1, targets[:, None]).squeeze(-1) - scored.logsumexp(-1), rows, labels.shape[0])
