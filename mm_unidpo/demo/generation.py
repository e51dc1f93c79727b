"""Batched generation for the demo's VLM: one image and one user prompt per row.

Prompts are rendered by the family adapter (the chat template, as in training) and continued by the
adapter's batched, left-padded ``generate`` (the one the lmms-eval plugin uses).
"""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image
from tqdm.auto import tqdm

from mm_unidpo.models import get_adapter


@torch.no_grad()
def generate(model: Any, processor: Any, prompts: list[str], images: list[Image.Image], *, max_new_tokens: int,
             batch_size: int = 64, num_samples: int = 1, temperature: float = 0.0, seed: int = 0,
             desc: str | None = None) -> list[list[str]]:
    """`num_samples` responses per (prompt, image): greedy when `temperature` is 0, else sampled.
    Returns one list of responses per row, in order."""
    adapter = get_adapter(model, processor)
    tokenizer = adapter.tokenizer
    was_training = model.training
    model.eval()
    if temperature > 0:
        torch.manual_seed(seed)
    sampling = ({"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0,
                 "num_return_sequences": num_samples} if temperature > 0
                else {"do_sample": False, "temperature": None, "top_k": None, "top_p": None})
    out: list[list[str]] = []
    rows = range(0, len(prompts), batch_size)
    for start in tqdm(rows, desc=desc, unit="batch", disable=desc is None, leave=False):
        chunk = prompts[start:start + batch_size]
        texts = [adapter.render([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": p}]}], None)
                 for p in chunk]
        ids = adapter.generate(model, texts, [[image] for image in images[start:start + batch_size]],
                               max_new_tokens=max_new_tokens, **sampling)
        decoded = tokenizer.batch_decode(ids, skip_special_tokens=True)
        per_row = num_samples if temperature > 0 else 1
        out += [[t.strip() for t in decoded[i:i + per_row]] for i in range(0, len(decoded), per_row)]
    model.train(was_training)
    return out
