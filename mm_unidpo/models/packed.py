"""The shared-prefix fast path: one row per pair, `[prompt + images][chosen][rejected]`.

A preference pair's two sequences share their prompt, and in a VLM the prompt is mostly image tokens.
Peer trainers run it twice (and twice more for the reference). Here the vision encoder and the
language model see the prompt once per pair: the row is packed as

    columns  [0, P)            the prompt, left-padded so that every row's prompt ends at column P
             [P, P + Cmax)     the chosen response (padded on its right)
             [P + Cmax, T)     the rejected response (padded on its right)

with a 4-D attention mask under which each response attends to the prompt and to itself only (the
rejected span never sees the chosen one), and positions that restart where the responses begin, so
each response is computed exactly as in its own sequence (Wang & Hegde, "Accelerating Direct Preference
Optimization with Prefix Sharing", arXiv 2410.20305). The LM head runs only on the columns whose
logits are scored (`logits_to_keep`), never on image and prompt positions.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

PAD, PROMPT, CHOSEN, REJECTED = 0, 1, 2, 3


@dataclass
class PackedPairBatch:
    input_ids: torch.Tensor  # (B, T)
    segments: torch.Tensor  # (B, T): PAD / PROMPT / CHOSEN / REJECTED
    position_ids: torch.Tensor  # (B, T) text positions (families with M-RoPE build their own from these)
    prompt_length: int  # P: the column where every row's responses begin
    chosen_width: int  # Cmax
    vision: dict[str, torch.Tensor]  # one copy per pair
    token_extras: dict[str, torch.Tensor]  # (B, T)
    chosen_targets: torch.Tensor  # (B, Cmax) token ids, -100 where padded
    rejected_targets: torch.Tensor  # (B, Rmax)
    score_chosen: torch.Tensor | None
    score_rejected: torch.Tensor | None
    ids: list
    indices: list
    num_truncated: int = 0
    kept: list[int] | None = None

    @property
    def num_pairs(self) -> int:
        return self.input_ids.shape[0]

    @property
    def attention_mask(self) -> torch.Tensor:
        """The 2-D mask of real tokens (used by families that derive positions from it)."""
        return (self.segments != PAD).long()

    def to(self, device: torch.device | str) -> "PackedPairBatch":
        def move(x):
            return x.to(device) if isinstance(x, torch.Tensor) else x
        changes = {f.name: move(getattr(self, f.name)) for f in dataclasses.fields(self)
                   if isinstance(getattr(self, f.name), torch.Tensor)}
        changes["vision"] = {k: move(v) for k, v in self.vision.items()}
        changes["token_extras"] = {k: move(v) for k, v in self.token_extras.items()}
        return dataclasses.replace(self, **changes)


def pack(encoded: list, pad_token_id: int, vision: dict[str, torch.Tensor]) -> PackedPairBatch:
    """Lay out encoded pairs (see `EncodedPair`) one row each, prompts right-aligned at column P."""
    prompt_len = max(len(e.prompt_ids) for e in encoded)
    chosen_w = max(len(e.chosen_ids) for e in encoded)
    rejected_w = max(len(e.rejected_ids) for e in encoded)
    width, b = prompt_len + chosen_w + rejected_w, len(encoded)
    input_ids = torch.full((b, width), pad_token_id, dtype=torch.long)
    segments = torch.zeros((b, width), dtype=torch.long)
    positions = torch.zeros((b, width), dtype=torch.long)
    chosen_targets = torch.full((b, chosen_w), -100, dtype=torch.long)
    rejected_targets = torch.full((b, rejected_w), -100, dtype=torch.long)
    extra_keys = sorted({k for e in encoded for k in e.token_extras})
    extras = {k: torch.zeros((b, width), dtype=torch.long) for k in extra_keys}
    for i, e in enumerate(encoded):
        p, c, r = len(e.prompt_ids), len(e.chosen_ids), len(e.rejected_ids)
        start = prompt_len - p
        input_ids[i, start:prompt_len] = torch.tensor(e.prompt_ids)
        segments[i, start:prompt_len] = PROMPT
        positions[i, start:prompt_len] = torch.arange(p)
        for k in extra_keys:
            extras[k][i, start:prompt_len] = torch.tensor(e.token_extras[k])
        input_ids[i, prompt_len:prompt_len + c] = torch.tensor(e.chosen_ids)
        segments[i, prompt_len:prompt_len + c] = CHOSEN
        positions[i, prompt_len:prompt_len + c] = p + torch.arange(c)
        chosen_targets[i, :c] = torch.tensor(e.chosen_ids)
        r0 = prompt_len + chosen_w
        input_ids[i, r0:r0 + r] = torch.tensor(e.rejected_ids)
        segments[i, r0:r0 + r] = REJECTED
        positions[i, r0:r0 + r] = p + torch.arange(r)
        rejected_targets[i, :r] = torch.tensor(e.rejected_ids)
    scores = [(e.record.score_chosen, e.record.score_rejected) for e in encoded]
    has_scores = all(sc is not None and sr is not None for sc, sr in scores)
    return PackedPairBatch(
        input_ids=input_ids, segments=segments, position_ids=positions, prompt_length=prompt_len,
        chosen_width=chosen_w, vision=vision, token_extras=extras, chosen_targets=chosen_targets,
        rejected_targets=rejected_targets,
        score_chosen=torch.tensor([s[0] for s in scores], dtype=torch.float32) if has_scores else None,
        score_rejected=torch.tensor([s[1] for s in scores], dtype=torch.float32) if has_scores else None,
        ids=[e.record.id for e in encoded], indices=[e.record.index for e in encoded],
        num_truncated=sum(e.truncated for e in encoded))


def attention_allowed(segments: torch.Tensor) -> torch.Tensor:
    """(B, 1, T, T) boolean mask, True = attend: causal, real keys only, a response sees the prompt and itself."""
    t = segments.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=segments.device).tril()
    q, k = segments[:, :, None], segments[:, None, :]
    allowed = causal & (k != PAD) & ((k == PROMPT) | (k == q))
    # A padding query attends to itself only, so no row of the softmax is empty (which would give NaN).
    allowed = allowed | torch.eye(t, dtype=torch.bool, device=segments.device)
    return allowed[:, None]


def attention_bias(segments: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The same mask as an additive bias (0 / most negative), for attention implementations that add it."""
    allowed = attention_allowed(segments)
    return torch.zeros(allowed.shape, dtype=dtype, device=segments.device).masked_fill_(~allowed, torch.finfo(dtype).min)


def scored_columns(batch: PackedPairBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The columns whose logits are needed, and for each response token the index of its column there.

    The first token of each response is predicted by the last prompt column; every later token by
    the column just before it in its own span.
    """
    p, cw = batch.prompt_length, batch.chosen_width
    rw = batch.rejected_targets.shape[1]
    device = batch.input_ids.device
    # keep = [p-1] + chosen predictors [p .. p+cw-2] + rejected predictors [p+cw .. p+cw+rw-2]
    keep = torch.cat([torch.tensor([p - 1], device=device), torch.arange(p, p + cw - 1, device=device),
                      torch.arange(p + cw, p + cw + rw - 1, device=device)])
    chosen_index = torch.arange(cw, device=device)  # token k -> keep[k] (k=0 -> p-1, k>0 -> p+k-1)
    rejected_index = torch.cat([torch.zeros(1, dtype=torch.long, device=device),
                                torch.arange(cw, cw + rw - 1, device=device)])
    return keep, chosen_index, rejected_index


def packed_logps(logits: torch.Tensor, batch: PackedPairBatch, chosen_index: torch.Tensor,
                 rejected_index: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Sums and counts of response log-probs from the kept-column logits (B, K, V); float32 log-softmax."""
    out = []
    for targets, index in ((batch.chosen_targets, chosen_index), (batch.rejected_targets, rejected_index)):
        mask = targets != -100
        rows, cols = torch.nonzero(mask, as_tuple=True)
        scored = logits[rows, index[cols]].float()  # (N, V)
        token_logps = scored.gather(-1, targets[rows, cols].unsqueeze(-1)).squeeze(-1) - scored.logsumexp(-1)
        sums = torch.zeros(targets.shape[0], dtype=torch.float32, device=logits.device).index_add(0, rows, token_logps)
        out += [sums, mask.sum(-1)]
    return tuple(out)
