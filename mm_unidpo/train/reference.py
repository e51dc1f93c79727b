"""Reference log-probs: computed once before training and cached on disk.

The cache key covers everything the numbers depend on — the data (texts, scores-free, and the bytes of
every image), the model (id, revision, config, dtype, 4-bit), the chat template, the family and the
max length — so changing any of them misses the cache instead of silently reusing stale values. Image
data is supported (TRL refuses precomputation for VLM data).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from mm_unidpo.data.images import resolve_image_path
from mm_unidpo.data.records import PreferenceRecord
from mm_unidpo.models.base import Adapter

logger = logging.getLogger(__name__)
CACHE_VERSION = 1


def _image_digest(ref: Any, record: PreferenceRecord) -> str:
    h = hashlib.sha256()
    if isinstance(ref, bytes):
        h.update(ref)
    elif isinstance(ref, str):
        with open(resolve_image_path(ref, record.image_root, record), "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    else:  # PIL image
        buffer = io.BytesIO()
        ref.save(buffer, format="PNG")
        h.update(buffer.getvalue())
    return h.hexdigest()


def data_fingerprint(records: list[PreferenceRecord]) -> str:
    h = hashlib.sha256()
    for r in records:
        h.update(json.dumps([r.prompt, r.chosen, r.rejected], sort_keys=True, default=str).encode())
        for ref in r.images:
            h.update(_image_digest(ref, r).encode())
    return h.hexdigest()


def model_fingerprint(model: Any, settings: dict[str, Any]) -> str:
    from mm_unidpo.models import unwrap_model

    base = unwrap_model(model)
    config = getattr(base, "config", None)
    payload = {"settings": settings, "config": config.to_dict() if config is not None else None}
    name = settings.get("name_or_path")
    if name and os.path.isdir(name):  # local weights: their sizes and times stand in for their bytes
        payload["files"] = sorted((p.name, p.stat().st_size, int(p.stat().st_mtime))
                                  for p in Path(name).glob("*.safetensors"))
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def cache_key(records: list[PreferenceRecord], model: Any, adapter: Adapter, model_settings: dict[str, Any]) -> str:
    template = getattr(adapter.processor, "chat_template", None) or getattr(adapter.tokenizer, "chat_template", None)
    parts = {
        "version": CACHE_VERSION, "data": data_fingerprint(records),
        "model": model_fingerprint(model, model_settings), "template": template, "family": adapter.family,
        "max_length": adapter.max_length,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


@torch.no_grad()
def compute_reference_logps(model: Any, adapter: Adapter, records: list[PreferenceRecord], *, batch_size: int,
                            device: torch.device | str, disable_adapter: bool) -> dict[str, torch.Tensor]:
    """Reference sums and lengths for every record, in order. Records that cannot be encoded get NaN."""
    was_training = model.training
    model.eval()
    context = model.disable_adapter() if disable_adapter else nullcontext()
    n = len(records)
    out = {"chosen": torch.full((n,), float("nan")), "rejected": torch.full((n,), float("nan")),
           "chosen_lengths": torch.zeros(n, dtype=torch.long), "rejected_lengths": torch.zeros(n, dtype=torch.long)}
    with context:
        for start in tqdm(range(0, n, batch_size), desc="reference log-probs", unit="batch"):
            chunk = list(range(start, min(start + batch_size, n)))
            batch = adapter.collate([records[i] for i in chunk])
            keep = [chunk[j] for j in batch.kept] if batch.kept is not None else chunk
            result = adapter.sequence_logps(model, batch.to(device))
            index = torch.tensor(keep)
            out["chosen"][index] = result.chosen_logps.float().cpu()
            out["rejected"][index] = result.rejected_logps.float().cpu()
            out["chosen_lengths"][index] = result.chosen_lengths.cpu()
            out["rejected_lengths"][index] = result.rejected_lengths.cpu()
    model.train(was_training)
    return out


def load_or_compute(cache_dir: str | Path, key: str, compute) -> tuple[dict[str, torch.Tensor], bool]:
    """Load `ref-<key>.safetensors` from `cache_dir`, or compute and write it atomically. Returns (values, hit)."""
    path = Path(cache_dir) / f"ref-{key}.safetensors"
    if path.is_file():
        logger.info("reference cache hit: %s", path)
        return load_file(str(path)), True
    logger.info("reference cache miss: computing %s", path)
    values = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file({k: v.contiguous() for k, v in values.items()}, str(tmp))
    os.replace(tmp, path)
    return values, False
