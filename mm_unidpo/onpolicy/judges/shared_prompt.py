"""Responses to one prompt scored by a classifier (reward model, process reward model) from one prefill
of their common start, instead of one forward per response.

    for rows, suffixes, out in shared_prefix_forwards(model, ids, keys, first_read, pad_id, rows=8):
        ...   # out: the model's own output (logits) on the rows' suffixes, read as on the whole inputs

The sequences are grouped by `keys` (their prompt). A group's prefix is its sequences' longest common run
of leading token ids (so it ends at a token boundary of each: the full inputs are tokenized, never the
prompt alone), cut back to the first position any of them is read at (`first_read`: a sequence
classifier's last non-pad token, a PRM's first step separator), so every position that is read lies in
a suffix. The prefix runs through the model once with a KV cache; the cache is repeated to the suffix
rows with `sampling.select_rows` (the layers' own `reorder_cache`), and the suffixes, padded on the side
the caller's reference path pads, run through the model's own forward against it (its own head reads
them), at the positions that follow the prefix. Only the order of floating-point sums changes against
one forward per sequence; grouping by a wrong key costs speed only.

A model whose forward takes no past cache (encoder-only, encoder-decoder) cannot share: `cache_argument`
is None and the caller scores one forward per sequence.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from transformers import DynamicCache

from mm_unidpo.models import pad_rows

from ..sampling import select_rows


def cache_argument(model: Any) -> str | None:
    """The keyword the model's forward takes a past KV cache by (transformers' `cache`, or the
    `past_key_values` of older remote code); None when it takes none or is an encoder-decoder."""
    if getattr(model.config, "is_encoder_decoder", False):
        return None
    parameters = inspect.signature(model.forward).parameters
    return next((name for name in ("cache", "past_key_values") if name in parameters), None)


def common_prefix(sequences: Sequence[Sequence[Any]]) -> int:
    """How many leading items (token ids, or tuples of a token and its side inputs) all `sequences` share."""
    length = min(map(len, sequences))
    for other in sequences[1:]:
        length = next((k for k in range(length) if other[k] != sequences[0][k]), length)
    return length


@torch.no_grad()
def shared_prefix_forwards(
    model: Any,
    sequences: list[list[int]],
    keys: list[Any],
    first_read: list[int],
    pad_id: int,
    rows: int,
    side: str = "right",
) -> Iterator[tuple[list[int], list[list[int]], Any]]:
    """For batches of at most `rows` sequences of one key: (their indices, their suffixes, the model's
    output on the suffixes, padded on `side`, after their group's prefix). `first_read[i]` is the earliest
    position of sequence i the caller reads (the prefix ends before it)."""
    keyword = cache_argument(model)
    if keyword is None:
        raise ValueError(f"{type(model).__name__} takes no past cache: score one forward per sequence")
    device = next(model.parameters()).device
    groups: dict[Any, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    for members in groups.values():
        shared = min(common_prefix([sequences[i] for i in members]), *(first_read[i] for i in members))
        cache = None
        if shared > 0:
            cache = DynamicCache(config=model.config)
            prefix = torch.tensor([sequences[members[0]][:shared]], device=device)
            model(input_ids=prefix, attention_mask=torch.ones_like(prefix), use_cache=True, **{keyword: cache})
        members = sorted(members, key=lambda i: -len(sequences[i]))  # similar lengths share a batch
        for start in range(0, len(members), rows):
            batch = members[start : start + rows]
            suffixes = [sequences[i][shared:] for i in batch]
            ids, mask = pad_rows(suffixes, pad_id, side)
            # Each token's own position after the prefix: left padding sits between the two and takes none.
            positions = shared + (mask.cumsum(-1) - 1).clamp(min=0)
            mask = torch.cat([torch.ones(len(batch), shared, dtype=torch.long), mask], dim=1)
            extra: dict[str, Any] = {}
            if cache is not None:  # the prefix's cache, one copy per row (the forward appends to it)
                extra[keyword] = copy.deepcopy(cache)
                select_rows(model, extra[keyword], torch.zeros(len(batch), dtype=torch.long, device=device))
            out = model(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                position_ids=positions.to(device),
                use_cache=cache is not None,
                **extra,
            )
            yield batch, suffixes, out
