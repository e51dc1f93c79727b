"""Reference log-probs: computed once before training and cached on disk.

The cache key covers everything the numbers depend on — the data (texts and the bytes of every image,
as a set: order does not matter), the model (id, revision, config, dtype, 4-bit), and the adapter
(`adapter_fingerprint`: family, chat template, tokenizer, image processor, max length) — so changing
any of them misses the cache instead of silently reusing stale values. Image data is supported (TRL
refuses precomputation for VLM data).

Nothing read back is trusted: the file holds each row's record digest, the row count and a checksum of
every tensor (names, shapes and bytes). On load the rows are looked up by the digests of the records
being trained on, so a reordered dataset cannot misalign them; a file that is truncated, altered (a
flipped bit, swapped chosen/rejected tensors), of the wrong length or missing a record is reported by
name and recomputed.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import transformers
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

import mm_unidpo
from mm_unidpo.data.fingerprint import record_digests
from mm_unidpo.data.records import PreferenceRecord
from mm_unidpo.io import sha256_json, sha256_text, write_cache
from mm_unidpo.models import Adapter, unwrap_model

from .checkpoints import tensors_checksum

logger = logging.getLogger(__name__)
CACHE_VERSION = 2
_FORMAT = "mm_unidpo-reference-logps"
_ROW_KEYS = "row_keys"  # (N, 32) uint8: the sha256 record digest of each row


def data_fingerprint(records: list[PreferenceRecord], digests: list[str | None] | None = None) -> str:
    """Digest of the records as a set of contents (order-independent: rows are keyed by content)."""
    digests = record_digests(records) if digests is None else digests
    return sha256_text("".join(sorted(d if d is not None else f"unreadable:{i}" for i, d in enumerate(digests))))


def model_fingerprint(model: Any, settings: dict[str, Any]) -> str:
    base = unwrap_model(model)
    config = getattr(base, "config", None)
    payload = {"settings": settings, "config": config.to_dict() if config is not None else None}
    name = settings.get("name_or_path")
    if name and os.path.isdir(name):  # local weights: their sizes and times stand in for their bytes
        payload["files"] = sorted(
            (p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in Path(name).glob("*.safetensors")
        )
    return sha256_json(payload, default=str)


def _tokenizer_digest(tokenizer: Any) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    return sha256_text(text)


def adapter_fingerprint(adapter: Adapter) -> dict[str, Any]:
    """Everything about an adapter that decides how a record encodes: its class and plain settings
    (max_length, max_image_pixels, end and media token ids, ...), the chat template, the tokenizer, the
    image processor's configuration, and the library versions."""
    settings: dict[str, Any] = {
        k: v for k, v in vars(adapter).items() if isinstance(v, (bool, int, float, str, type(None)))
    }
    settings.update(
        {
            k: sorted(v)
            for k, v in vars(adapter).items()
            if isinstance(v, (set, frozenset)) and all(isinstance(x, int) for x in v)
        }
    )
    image_processor = getattr(adapter.processor, "image_processor", None)
    return {
        "class": f"{type(adapter).__module__}.{type(adapter).__qualname__}",
        "settings": settings,
        "template": getattr(adapter.processor, "chat_template", None)
        or getattr(adapter.tokenizer, "chat_template", None),
        "tokenizer": _tokenizer_digest(adapter.tokenizer),
        "image_processor": image_processor.to_dict()
        if image_processor is not None and hasattr(image_processor, "to_dict")
        else None,
        "versions": [getattr(mm_unidpo, "__version__", None), transformers.__version__],
    }


def cache_key(
    records: list[PreferenceRecord],
    model: Any,
    adapter: Adapter,
    model_settings: dict[str, Any],
    digests: list[str | None] | None = None,
) -> str:
    parts = {
        "version": CACHE_VERSION,
        "data": data_fingerprint(records, digests),
        "model": model_fingerprint(model, model_settings),
        "adapter": adapter_fingerprint(adapter),
    }
    return sha256_json(parts, default=str)[:32]


@torch.no_grad()
def compute_reference_logps(
    model: Any,
    adapter: Adapter,
    records: list[PreferenceRecord],
    *,
    batch_size: int,
    device: torch.device | str,
    disable_adapter: bool,
) -> dict[str, torch.Tensor]:
    """Reference sums and lengths for every record, in order. Records that cannot be encoded get NaN."""
    was_training = model.training
    model.eval()
    context = model.disable_adapter() if disable_adapter else nullcontext()
    n = len(records)
    out = {
        "chosen": torch.full((n,), float("nan")),
        "rejected": torch.full((n,), float("nan")),
        "chosen_lengths": torch.zeros(n, dtype=torch.long),
        "rejected_lengths": torch.zeros(n, dtype=torch.long),
        # LD-DPO: the sums over each response's first min(|y_w|, |y_l|) tokens
        "chosen_shared": torch.full((n,), float("nan")),
        "rejected_shared": torch.full((n,), float("nan")),
    }
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
            assert result.chosen_shared is not None and result.rejected_shared is not None  # always summed
            out["chosen_shared"][index] = result.chosen_shared.float().cpu()
            out["rejected_shared"][index] = result.rejected_shared.float().cpu()
            if result.chosen_contrast is not None:  # the image-side terms' contrast view (adapter.contrast_key)
                out.setdefault("chosen_contrast", torch.full((n,), float("nan")))[index] = (
                    result.chosen_contrast.float().cpu()
                )
    model.train(was_training)
    return out


def load_or_compute(
    cache_dir: str | Path,
    key: str,
    compute: Callable[[], dict[str, torch.Tensor]],
    row_keys: list[str | None] | None = None,
) -> tuple[dict[str, torch.Tensor], bool]:
    """Load `ref-<key>.safetensors` from `cache_dir`, or compute and write it atomically. Returns (values, hit).

    `row_keys`: the record digest of each row `compute` returns (`record_digests(records)`); a hit returns
    the rows in that order, looked up by digest. A file that fails verification is named in a warning
    and recomputed."""
    path = Path(cache_dir) / f"ref-{key}.safetensors"
    if path.is_file():
        values = _verified(path, row_keys)
        if values is not None:
            logger.info("reference cache hit: %s", path)
            return values, True
    else:
        logger.info("reference cache miss: computing %s", path)
    values = compute()
    tensors = {k: v.contiguous() for k, v in values.items()}
    if row_keys is not None:
        tensors[_ROW_KEYS] = _digest_tensor(row_keys)
    metadata = {
        "format": _FORMAT,
        "version": str(CACHE_VERSION),
        "rows": str(_rows(tensors)),
        "checksum": tensors_checksum(tensors),
    }
    write_cache(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata), what="reference cache")
    return values, False


def _rows(tensors: dict[str, torch.Tensor]) -> int:
    lengths = {v.shape[0] if v.dim() else -1 for v in tensors.values()}
    if len(lengths) != 1:
        raise ValueError(f"reference values must all have one row per record, got lengths {sorted(lengths)}")
    return lengths.pop()


def _digest_tensor(digests: list[str | None]) -> torch.Tensor:
    rows = [bytes.fromhex(d) if d is not None else bytes(32) for d in digests]
    return (
        torch.frombuffer(bytearray(b"".join(rows)), dtype=torch.uint8).reshape(len(rows), 32).clone()
        if rows
        else torch.zeros((0, 32), dtype=torch.uint8)
    )


def _verified(path: Path, row_keys: list[str | None] | None) -> dict[str, torch.Tensor] | None:
    """The cached values, rows in `row_keys` order, if the file passes every check; else None (warned)."""

    def reject(why: str) -> dict[str, torch.Tensor] | None:
        logger.warning("reference cache %s %s: ignoring it and computing the reference log-probs again", path, why)
        return None

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    except Exception as error:  # noqa: BLE001 -- SafetensorError on a truncated or garbled file, OSError...
        return reject(f"cannot be read ({type(error).__name__}: {error})")
    if metadata.get("format") != _FORMAT or metadata.get("version") != str(CACHE_VERSION):
        return reject(f"is not a version-{CACHE_VERSION} reference cache (metadata {metadata})")
    try:
        rows = _rows(tensors)
    except ValueError as error:
        return reject(f"is inconsistent: {error}")
    if str(rows) != metadata.get("rows"):
        return reject(f"has {rows} rows where it was written with {metadata.get('rows')}")
    if tensors_checksum(tensors) != metadata.get("checksum"):
        return reject("fails its checksum (altered or damaged since it was written)")
    stored = tensors.pop(_ROW_KEYS, None)
    if row_keys is None:
        return tensors
    if stored is None:
        return reject("has no record digests to match its rows to the records")
    where = {bytes(row.tolist()).hex(): i for i, row in enumerate(stored)}
    missing = [i for i, d in enumerate(row_keys) if d is None or d not in where]
    if missing:
        return reject(f"has no row for {len(missing)} of the {len(row_keys)} records (first: position {missing[0]})")
    order = torch.tensor([where[d] for d in row_keys if d is not None], dtype=torch.long)  # none is None here
    return {name: tensor[order] for name, tensor in tensors.items()}
