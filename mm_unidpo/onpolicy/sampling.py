"""n samples per prompt from one prefill: the prompt (images included) runs once, its KV cache is
repeated to the n rows, and transformers' own `generate` continues all of them from that cache.

    out = generate_n(adapter, model, texts, images, n=8, max_new_tokens=128, do_sample=True, temperature=1.0)

`model.generate(num_return_sequences=n)` copies every prompt n times before the prefill, so an image's
576 LLaVA tokens go through the model n times; here they go once. How it stays exact:

* the prefill runs every prompt but its last token (left-padded, as `generate` pads them) with the
  positions `generate` itself would give (`_prepare_position_ids_for_generation`: 1-D from the mask,
  or 3-D M-RoPE for Qwen-VL / GLM-4V, which also leaves the model's per-row `rope_deltas`);
* the cache's rows are repeated with the layers' own `reorder_cache` (beam search's index select:
  full, sliding-window and linear-attention states alike; Mllama's cross-attention keys too), and
  `rope_deltas` with them;
* `generate` then gets the whole prompt, repeated, with that cache: it runs the one uncached token per
  row and samples exactly as with `num_return_sequences=n` (the same rows in the same order, so the
  same seed draws the same tokens, up to float rounding in the logits).

A family with its own generation path (LLaVA-orig decodes from spliced embeddings), or a prompt of one
token, takes `adapter.generate(num_return_sequences=n)` instead, and says so in the log.

`micro_batches` splits a batch of prompts (sorted longest first) into runs whose rows × (longest prompt
+ new tokens) stay within a token budget, the KV cache's size.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from mm_unidpo.models.families import Family
from mm_unidpo.models.utils import to_model_inputs, unwrap_model

logger = logging.getLogger(__name__)


def fallback_reason(adapter: Any, model: Any) -> str | None:
    """Why this model cannot share a prefill across samples (None: it can)."""
    if type(adapter.hooks).generate is not Family.generate:
        return "the family generates through its own path"
    if not hasattr(unwrap_model(model), "_prepare_position_ids_for_generation"):
        return "the model's generate cannot continue from a prefilled cache"
    return None


def generate_n(
    adapter: Any,
    model: Any,
    prompts: list[str],
    images: list[list[Any]],
    n: int,
    *,
    device: Any = None,
    **settings: Any,
) -> Any:
    """What `adapter.generate(model, prompts, images, num_return_sequences=n, **settings)` gives (n rows
    per prompt, new tokens only; with `return_dict_in_generate` the output object), from one prefill
    per prompt."""
    reason: str | None = fallback_reason(adapter, model)
    hooks = adapter.hooks
    inputs = None if reason else to_model_inputs(hooks.generate_inputs(prompts, images), model, device)
    if inputs is not None and inputs["input_ids"].shape[1] < 2:
        reason, inputs = "a prompt of one token leaves nothing to prefill", None
    if inputs is None:
        logger.info("%s: one prefill per sample (%s)", adapter.family, reason)
        if settings.get("do_sample") or n == 1:
            return adapter.generate(model, prompts, images, device=device, num_return_sequences=n, **settings)
        # transformers refuses num_return_sequences for greedy decoding: the prompts repeated, as it would
        repeated = [p for p in prompts for _ in range(n)], [i for i in images for _ in range(n)]
        return adapter.generate(model, *repeated, device=device, **settings)
    ids = inputs["input_ids"]
    rows, width = ids.shape
    per_token = {  # ids, mask, token types, Mllama's cross-attention mask: not the images' tensors
        k: v
        for k, v in inputs.items()
        if isinstance(v, torch.Tensor) and not v.is_floating_point() and v.shape[:2] == (rows, width)
    }
    cache = prefill(adapter, model, {**inputs, **{k: v[:, :-1] for k, v in per_token.items()}})
    repeat = torch.arange(rows, device=ids.device).repeat_interleave(n)
    select_rows(model, cache, repeat)
    settings.setdefault("pad_token_id", hooks.pad_token_id)
    settings.setdefault("eos_token_id", sorted(hooks.end_token_ids))
    # The images live in the cache now: only the token-aligned inputs (ids, mask, token types, Mllama's
    # cross-attention mask) go on, repeated as num_return_sequences repeats them.
    with torch.no_grad():
        out = model.generate(**{k: v[repeat] for k, v in per_token.items()}, cache=cache, **settings)
    if isinstance(out, torch.Tensor):
        return out[:, width:]
    out.sequences = out.sequences[:, width:]
    return out


@torch.no_grad()
def prefill(adapter: Any, model: Any, inputs: dict[str, Any]) -> Any:
    """The KV cache of a forward over `inputs`, at the positions `generate` gives the same tokens."""
    from transformers import DynamicCache

    base = unwrap_model(model)
    cache = DynamicCache(config=base.config)
    positions = base._prepare_position_ids_for_generation(inputs["input_ids"], dict(inputs))
    extra = {"logits_to_keep": 1} if adapter.spec.takes_logits_to_keep else {}
    model(**inputs, position_ids=positions, cache=cache, use_cache=True, **extra)
    return cache


def select_rows(model: Any, cache: Any, index: torch.Tensor) -> None:
    """Rows `index` of the cache (every layer's own states) and of the per-row M-RoPE offsets that
    Qwen-VL-style models keep between calls (`rope_deltas`, read when decoding from a cache)."""
    for layer in cache.layers:
        layer.reorder_cache(index)
    inner: Any = getattr(unwrap_model(model), "model", None)
    deltas = getattr(inner, "rope_deltas", None)
    if isinstance(deltas, torch.Tensor):  # (rows, 1), just set by the prefill's position ids
        inner.rope_deltas = deltas[index.to(deltas.device)]


def micro_batches(lengths: Sequence[int], n: int, new_tokens: int, budget: int | None) -> list[list[int]]:
    """Consecutive runs of prompt positions (`lengths` sorted longest first, as the caller batches them)
    whose n rows each, padded to the run's longest prompt plus `new_tokens`, hold at most `budget`
    tokens; a prompt alone over the budget is a run of its own."""
    runs: list[list[int]] = []
    for i, length in enumerate(lengths):
        longest = max([length, *(lengths[j] for j in runs[-1])]) if runs else length
        if runs and (budget is None or (len(runs[-1]) + 1) * n * (longest + new_tokens) <= budget):
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs
