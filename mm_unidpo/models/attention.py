"""Attention over a packed row, pair by pair: only the blocks the packed mask allows are computed.

A dense masked attention over a row of B packed pairs costs T² (T = the row's length) where the pairs
need Σ (p + c)²/2 + r·(p + r/2): for 8 pairs that is ~8× the work and a T×T mask in memory. Per pair,
two calls of PyTorch's scaled-dot-product attention compute exactly the allowed blocks:

    [prompt; chosen]  attends causally to  [prompt; chosen]                 (is_causal)
    [rejected]        attends to           [prompt; rejected], causal on rejected   (a small p+r mask)

Registered with transformers' attention interface as ``mm_unidpo_packed``. A model's language model is
switched to it once (`use_packed_attention`); a call without a ``packed_layout`` keyword is plain
``sdpa`` (generation, the plain layout), so the switch changes nothing else. The layout travels as a
keyword argument of the forward, which transformers hands to every attention layer and which gradient
checkpointing stores with each layer's inputs, so the recomputation in the backward sees it too. A packed
call passes an empty 4-D mask (one query row of zero keys): should a layer ever run plain sdpa on a
packed row anyway, that mask fails loudly instead of attending causally across pairs.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

from .utils import unwrap_model

NAME = "mm_unidpo_packed"
_registered = False


def packed_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    *,
    packed_layout: Any = None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function contract: (rows, heads, T, d) in, (rows, T, heads, d) out."""
    if packed_layout is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    gqa = query.shape[1] != key.shape[1]

    def attend(q, k, v, mask=None, causal=False):
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal, dropout_p=dropout, scale=scaling, enable_gqa=gqa
        )

    rows: list[list[torch.Tensor]] = [[] for _ in range(packed_layout.num_rows)]
    ends = [0] * packed_layout.num_rows
    for block in packed_layout.blocks:
        row, o, p = block.row, block.offset, block.prompt
        q, k, v = query[row : row + 1], key[row : row + 1], value[row : row + 1]
        spans = block.response_spans()
        first = spans[0][0] + spans[0][1] if spans else o + p  # [prompt; first response]: plain causal attention
        rows[row].append(attend(q[:, :, o:first], k[:, :, o:first], v[:, :, o:first], causal=True))
        for a, r in spans[1:]:
            if not r:
                continue
            keys = torch.cat([k[:, :, o : o + p], k[:, :, a : a + r]], dim=2)
            values = torch.cat([v[:, :, o : o + p], v[:, :, a : a + r]], dim=2)
            # response token i sees the whole prompt and its own tokens 0..i
            mask = torch.ones(r, p + r, dtype=torch.bool, device=query.device).tril_(diagonal=p)
            rows[row].append(attend(q[:, :, a : a + r], keys, values, mask=mask))
        ends[row] = block.end
    width = query.shape[2]
    out = []
    for parts, end in zip(rows, ends):
        if end < width:  # the row's padding: outputs never read
            parts.append(query.new_zeros((1, query.shape[1], width - end, value.shape[-1])))
        out.append(torch.cat(parts, dim=2))
    return torch.cat(out, dim=0).transpose(1, 2).contiguous(), None


def register() -> None:
    global _registered
    if not _registered:
        AttentionInterface.register(NAME, packed_attention_forward)
        AttentionMaskInterface.register(NAME, sdpa_mask)  # unpacked calls build sdpa's own masks
        _registered = True


def use_packed_attention(model: Any) -> bool:
    """Route the language model's attention through `packed_attention_forward` (idempotent). True if it is
    (the LM used sdpa or already this); False for other implementations (eager, flash kernels), which keep theirs."""
    config: Any = getattr(unwrap_model(model), "config", None)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    if text is None:
        return False
    current = getattr(text, "_attn_implementation", None)
    if current == NAME:
        return True
    if current != "sdpa":
        return False
    register()
    text._attn_implementation = NAME
    return True


def packed_mask_placeholder(layout: Any, device: Any) -> torch.Tensor:
    """The 4-D mask a packed call passes: transformers returns a 4-D mask as it is, so no T×T mask is
    built; its zero key length makes plain sdpa fail on it (see the module doc)."""
    return torch.ones((layout.num_rows, 1, layout.width, 0), dtype=torch.bool, device=device)
