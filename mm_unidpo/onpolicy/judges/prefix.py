"""Continuations of many prompts that share a long prefix (the VLM judge's yes/no questions about every
claim of every sample of one image), scored from one prefill of that prefix.

    logps = prefix_logps(adapter, model, prompts, continuations, rows=16)   # None: score them one by one

The prompts are grouped by their images (equal vision tensors). A group's prefix is its prompts' longest
common run of leading tokens (the image and the instruction up to the claim), less one token so that
every prompt keeps a suffix; it runs through the model once, with the positions `generate` gives it
(`sampling.prefill`). Then each prompt's suffix followed by one continuation is a row, the rows go in
batches of `rows` against the prefix cache repeated to them (right-padded: a row's padding comes after
its tokens), and each continuation's log-probs are read at its own positions. Per-token side inputs
(token types) follow their tokens; a continuation's tokens take the prompt's last value, as training's
layouts give them. Positions continue the prefix's, through `_prepare_position_ids_for_generation`
(M-RoPE: the model's `rope_deltas` from the prefill).

What changes against one forward per prompt is only the order of floating-point sums. A family whose
forward takes other inputs than the processor's (LLaVA-orig splices image features; Mllama lays out a
cross-attention mask per token and needs forwards per image count) returns None: the caller scores
one forward per prompt.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import torch

from mm_unidpo.models.encoding import EncodedPrompt
from mm_unidpo.models.families import Family
from mm_unidpo.models.utils import to_model_inputs, unwrap_model

from ..sampling import prefill, select_rows
from .shared_prompt import common_prefix


def shares_prefix(adapter: Any) -> bool:
    """Whether the family's forward is the processor's inputs as they are (so a cache can stand in for a prefix)."""
    hooks = type(adapter.hooks)
    return hooks.model_inputs is Family.model_inputs and hooks.forward_parts is Family.forward_parts


@torch.no_grad()
def prefix_logps(
    adapter: Any, model: Any, prompts: list[EncodedPrompt], continuations: list[list[list[int]]], *, rows: int = 16
) -> torch.Tensor | None:
    """(prompts, most continuations) sums of each continuation's log-probs after its prompt (zero where a
    prompt has fewer), as `Adapter.score_continuations` gives them; None when the family cannot share."""
    if not shares_prefix(adapter):
        return None
    out = torch.zeros(len(prompts), max((len(c) for c in continuations), default=1), dtype=torch.float32)
    groups: dict[str, list[int]] = {}
    for i, prompt in enumerate(prompts):
        groups.setdefault(_vision_key(prompt.vision), []).append(i)
    for members in groups.values():
        _score_group(adapter, model, prompts, continuations, members, rows, out)
    return out


def _vision_key(vision: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha1()
    for key in sorted(vision):
        value = vision[key].detach().cpu()
        digest.update(f"{key}{tuple(value.shape)}{value.dtype}".encode())
        value = value.reshape(-1)
        digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


def _common_prefix(prompts: list[EncodedPrompt]) -> int:
    """Leading positions where every prompt has the same token and the same side inputs, at most the
    shortest prompt less one."""
    names = sorted(prompts[0].token_extras)
    rows = [list(zip(p.ids, *(p.token_extras[n] for n in names), strict=True)) for p in prompts]
    return min(common_prefix(rows), min(len(p.ids) for p in prompts) - 1)


def _score_group(
    adapter: Any,
    model: Any,
    prompts: list[EncodedPrompt],
    continuations: list[list[list[int]]],
    members: list[int],
    rows: int,
    out: torch.Tensor,
) -> None:
    """Log-prob sums of the continuations of the prompts `members` (same images) into `out`."""
    shared = _common_prefix([prompts[i] for i in members])
    if shared < 1:  # nothing in common: each prompt its own prefix
        if len(members) == 1:
            raise ValueError(f"a prompt of {len(prompts[members[0]].ids)} token(s) leaves no prefix to share")
        for i in members:
            _score_group(adapter, model, prompts, continuations, [i], rows, out)
        return
    head = prompts[members[0]]
    device = model.device
    prefix_inputs = {
        "input_ids": torch.tensor([head.ids[:shared]]),
        "attention_mask": torch.ones(1, shared, dtype=torch.long),
        **head.vision,
        **{k: torch.tensor([v[:shared]]) for k, v in head.token_extras.items()},
    }
    cache = prefill(adapter, model, to_model_inputs(prefix_inputs, model))
    # One row per (prompt, continuation): the prompt's suffix, then the continuation.
    jobs = [(i, k) for i in members for k in range(len(continuations[i]))]
    base = unwrap_model(model)
    for start in range(0, len(jobs), rows):
        batch = jobs[start : start + rows]
        tails = [prompts[i].ids[shared:] + continuations[i][k] for i, k in batch]
        width = max(map(len, tails))
        ids = torch.full((len(batch), width), adapter.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(batch), shared + width), dtype=torch.long)
        mask[:, :shared] = 1
        extras = {name: torch.zeros((len(batch), width), dtype=torch.long) for name in head.token_extras}
        for r, ((i, k), tail) in enumerate(zip(batch, tails)):
            ids[r, : len(tail)] = torch.tensor(tail)
            mask[r, shared : shared + len(tail)] = 1
            for name, values in prompts[i].token_extras.items():
                row = values[shared:] + [values[-1]] * len(continuations[i][k])
                extras[name][r, : len(row)] = torch.tensor(row)
        full = torch.cat([torch.tensor([head.ids[:shared]]).expand(len(batch), -1), ids], dim=1)
        inputs = to_model_inputs({"input_ids": ids, "attention_mask": mask, **extras}, model)
        rows_cache = copy.deepcopy(cache)
        select_rows(model, rows_cache, torch.zeros(len(batch), dtype=torch.long, device=device))
        kwargs = {"input_ids": full.to(device), "attention_mask": inputs["attention_mask"], "cache": rows_cache}
        positions = base._prepare_position_ids_for_generation(full.to(device), kwargs)[..., shared:]
        # The head only where answers are read: from the earliest position that predicts one to the end.
        starts = [len(prompts[i].ids) - shared - 1 for i, _ in batch]  # each row's position predicting its first
        keep = width - min(starts)
        extra = {"logits_to_keep": keep} if adapter.spec.takes_logits_to_keep else {}
        logits = model(**inputs, position_ids=positions, cache=rows_cache, use_cache=True, **extra).logits
        offset = width - logits.shape[1]
        for r, ((i, k), start_at) in enumerate(zip(batch, starts)):
            target = torch.tensor(continuations[i][k], device=logits.device)
            rows_logits = logits[r, start_at - offset : start_at - offset + len(target)].float()
            out[i, k] = torch.log_softmax(rows_logits, -1).gather(-1, target[:, None]).sum().cpu()
