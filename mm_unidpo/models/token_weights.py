"""DDPO's token weights: the tokens where the chosen and the rejected response differ count w times.

RLHF-V (Yu et al., arXiv 2312.00849, "dense direct preference optimization") and CHiP's segment level
(arXiv 2501.16629; LVUGAI/CHiP `get_seg_weight` / `compute_weighted_logp`) score a response by the
weighted sum of its token log-probs,

    L = Σ_t w_t · log π(y_t | x, y_<t),   w_t = w on the tokens of y_w and y_l that differ, 1 elsewhere,

so that the preference concentrates on the corrected segments (RLHF-V uses w = 4; CHiP's code 1.1 by
default). The differing tokens are those outside the common runs of at least `MIN_MATCH` = 3 tokens that
difflib's SequenceMatcher finds between the two responses' token ids (CHiP's `get_diff_ids`, min_match_size
3; we run it without autojunk, so long responses are matched exactly too). The lengths stay token counts
(CHiP's sums, not RLHF-V's weighted mean). The chosen response under the contrast image takes the chosen
response's weights (the same tokens).
"""

from __future__ import annotations

import difflib
from collections import defaultdict

import torch

from .layouts import ScoredPositions

MIN_MATCH = 3


def differing(a: list[int], b: list[int], min_match: int = MIN_MATCH) -> tuple[list[bool], list[bool]]:
    """Per token of `a` and of `b`: whether it lies outside every common run of >= `min_match` tokens."""
    a_diff, b_diff = [True] * len(a), [True] * len(b)
    for block in difflib.SequenceMatcher(None, a, b, autojunk=False).get_matching_blocks():
        if block.size >= min_match:
            a_diff[block.a : block.a + block.size] = [False] * block.size
            b_diff[block.b : block.b + block.size] = [False] * block.size
    return a_diff, b_diff


def token_weights(scored: ScoredPositions, targets: torch.Tensor, weight: float) -> torch.Tensor:
    """(N,) weights of the scored tokens (`targets` their ids): `weight` where an item's chosen (slot 0) and
    rejected (slot 1) responses differ, 1 elsewhere; other slots follow slot 0 by rank."""
    where: dict[tuple[int, int], list[int]] = defaultdict(list)
    for n, (item, slot, rank) in enumerate(zip(scored.items.tolist(), scored.slots.tolist(), scored.ranks.tolist())):
        where[(item, slot)].append(n)
        assert rank == len(where[(item, slot)]) - 1  # a response's tokens are listed in order
    ids = targets.tolist()
    out = torch.ones(len(ids), dtype=torch.float32)
    for item in {item for item, _ in where}:
        chosen, rejected = where.get((item, 0), []), where.get((item, 1), [])
        marks = dict(zip((0, 1), differing([ids[n] for n in chosen], [ids[n] for n in rejected])))
        for slot in {s for i, s in where if i == item}:
            for rank, n in enumerate(where[(item, slot)]):
                if marks[slot if slot in (0, 1) else 0][rank]:
                    out[n] = weight
    return out.to(targets.device)
