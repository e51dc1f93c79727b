"""Pre-flight: every record encoded once, before step 1, so no bad record is first met mid-training.

    result = preflight(records, adapter, on_bad_record="skip", digests=record_digests(records),
                       cache_dir="runs/x/preflight_cache")
    result.records      # the records that encode, in order: what training sees, so batches stay full
    result.skips        # the ones dropped, counted once by reason

Encoding is everything collate does to a record short of building tensors for a batch: the chat
template, every image fully decoded (a truncated JPEG is only found here, its header reads fine), the
processor's placeholder checks (image tokens in the text vs the images given), the prompt against
`max_length`, and the image token inside a response. In error mode the whole pass runs and the first
few bad records are named together (`PreflightError`), before any model step; in skip mode each bad
record is dropped once.

Verdicts are cached by record content (`data.fingerprint.record_digest`) and by everything about the
adapter that decides them (`adapter_fingerprint`), in a JSON file with a checksum: a rerun encodes
nothing it has seen. With `workers` the pass runs in `torch.utils.data.DataLoader` worker processes.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from mm_unidpo.data.records import BadRecordError, PreferenceRecord, SkipReport
from mm_unidpo.io import sha256_json, write_cache
from mm_unidpo.models import Adapter

from .reference import adapter_fingerprint

logger = logging.getLogger(__name__)
PREFLIGHT_VERSION = 2
MIN_RECORDS_FOR_WORKERS = 256  # below this, starting worker processes costs more than it saves
SHOWN_ERRORS = 5

Verdict = tuple  # (reason | None, detail | None, truncated: bool, packed length: int)


class PreflightError(BadRecordError):
    """Bad records found before training (error mode): the first names the error, all are in `errors`."""

    def __init__(self, errors: list[BadRecordError], total: int, description: str):
        first = errors[0]
        self.errors, self.reason, self.index, self.record_id, self.detail = (
            errors,
            first.reason,
            first.index,
            first.record_id,
            first.detail,
        )
        shown = "\n".join(f"  {e}" for e in errors[:SHOWN_ERRORS])
        more = f"\n  ... and {len(errors) - SHOWN_ERRORS} more" if len(errors) > SHOWN_ERRORS else ""
        counts = ", ".join(f"{reason}: {n}" for reason, n in sorted(_counts(errors).items()))
        ValueError.__init__(
            self,
            f"{description}: {len(errors)} of {total} records cannot be trained on ({counts}), "
            f"found before training:\n{shown}{more}\nFix them, or set data.on_bad_record: skip "
            f"to drop them (each counted once)",
        )


def _counts(errors: list[BadRecordError]) -> dict[str, int]:
    out: dict[str, int] = {}
    for error in errors:
        out[error.reason] = out.get(error.reason, 0) + 1
    return out


@dataclass
class PreflightResult:
    records: list[PreferenceRecord]  # the records that encode, in order
    kept: list[int]  # their positions in the input
    skips: SkipReport  # the records dropped (skip mode), once each
    truncated: int  # kept pairs whose responses are cut at max_length, once each
    lengths: list[int]  # the kept pairs' packed lengths (token-budget batches)
    encoded: int  # records encoded in this pass
    cached: int  # verdicts read from the cache
    seconds: float


def verdict(adapter: Adapter, record: PreferenceRecord) -> Verdict:
    """Encode `record` once: (None, None, truncated, its packed length) if it can be trained on, else
    (reason, detail, False, 0)."""
    try:
        encoded = adapter.encode(record)
        return None, None, encoded.truncated, encoded.packed_length
    except BadRecordError as error:
        return error.reason, error.detail, False, 0
    except Exception as error:  # noqa: BLE001 -- a record must never be the reason for a traceback mid-training
        return "encode_failed", f"{type(error).__name__}: {error}", False, 0


class _Encoding(Dataset):
    def __init__(self, adapter: Adapter, records: list[PreferenceRecord], todo: list[int]):
        self.adapter, self.records, self.todo = adapter, records, todo

    def __len__(self) -> int:
        return len(self.todo)

    def __getitem__(self, i: int) -> tuple[int, Verdict]:
        return self.todo[i], verdict(self.adapter, self.records[self.todo[i]])


def _identity(item: Any) -> Any:
    return item


def _encode_all(
    adapter: Adapter, records: list[PreferenceRecord], todo: list[int], workers: int, description: str
) -> dict[int, Verdict]:
    bar = tqdm(total=len(todo), desc=f"pre-flight {description}", unit="record", disable=not todo)
    out: dict[int, Verdict] = {}
    if workers > 0:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the workers are forked: no Rust thread pools
        # Its own generator: worker seeding must not draw from the global RNG that training uses.
        loader = DataLoader(
            _Encoding(adapter, records, todo),
            batch_size=None,
            num_workers=workers,
            collate_fn=_identity,
            prefetch_factor=16,
            generator=torch.Generator().manual_seed(0),
        )
        for position, result in loader:
            out[position] = result
            bar.update()
    else:
        for position in todo:
            out[position] = verdict(adapter, records[position])
            bar.update()
    bar.close()
    return out


def _default_workers(n: int) -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = min(8, cpus - 1)
    return workers if n >= MIN_RECORDS_FOR_WORKERS and workers >= 2 else 0


def preflight(
    records: list[PreferenceRecord],
    adapter: Adapter,
    *,
    on_bad_record: str = "error",
    digests: list[str | None] | None = None,
    cache_dir: str | Path | None = None,
    workers: int | None = None,
    description: str = "data",
) -> PreflightResult:
    """Encode every record once (or read its cached verdict); raise `PreflightError` naming the bad ones
    (error mode) or drop each once (skip mode). `digests`: `record_digests(records)`, needed for the cache."""
    if on_bad_record not in ("error", "skip"):
        raise ValueError(f"on_bad_record must be 'error' or 'skip', got {on_bad_record!r}")
    start = time.perf_counter()
    cache = _Cache(cache_dir, adapter) if cache_dir is not None and digests is not None else None
    known = cache.load() if cache is not None else {}
    verdicts: dict[int, Verdict] = {}
    if digests is not None:
        verdicts = {i: tuple(known[d]) for i, d in enumerate(digests) if d is not None and d in known}
    todo = [i for i in range(len(records)) if i not in verdicts]
    workers = _default_workers(len(todo)) if workers is None else workers
    encoded = _encode_all(adapter, records, todo, workers if len(todo) > 1 else 0, description)
    verdicts.update(encoded)
    if cache is not None and digests is not None and encoded:  # (a cache exists only with digests)
        cache.save(
            {d: list(v) for i, v in verdicts.items() if (d := digests[i]) is not None and v[0] != "encode_failed"}
        )

    errors = [
        BadRecordError(records[i], verdicts[i][0], verdicts[i][1])
        for i in range(len(records))
        if verdicts[i][0] is not None
    ]
    if errors and on_bad_record == "error":
        raise PreflightError(errors, len(records), description)
    skips = SkipReport()
    for error in errors:
        skips.add(error)
        logger.info("pre-flight: skipping %s", error)
    kept = [i for i in range(len(records)) if verdicts[i][0] is None]
    result = PreflightResult(
        records=[records[i] for i in kept],
        kept=kept,
        skips=skips,
        truncated=sum(bool(verdicts[i][2]) for i in kept),
        lengths=[int(verdicts[i][3]) for i in kept],
        encoded=len(encoded),
        cached=len(records) - len(encoded),
        seconds=time.perf_counter() - start,
    )
    skips.log(f"pre-flight {description}")
    logger.info(
        "pre-flight %s: %d records, %d encoded, %d verdicts from the cache, %d dropped, %d truncated, %.1fs",
        description,
        len(records),
        result.encoded,
        result.cached,
        skips.total,
        result.truncated,
        result.seconds,
    )
    return result


class _Cache:
    """Verdicts by record digest, in `preflight-<adapter fingerprint>.json` with a checksum of its entries."""

    def __init__(self, cache_dir: str | Path, adapter: Adapter):
        key = sha256_json({"version": PREFLIGHT_VERSION, "adapter": adapter_fingerprint(adapter)})[:32]
        self.path = Path(cache_dir) / f"preflight-{key}.json"

    @staticmethod
    def _checksum(verdicts: dict[str, Any]) -> str:
        return sha256_json(verdicts)

    def load(self) -> dict[str, list]:
        if not self.path.is_file():
            return {}
        try:
            payload = json.loads(self.path.read_text(encoding="utf-8"))
            verdicts = payload["verdicts"]
            if payload.get("checksum") != self._checksum(verdicts):
                raise ValueError("checksum mismatch")
        except (OSError, ValueError, KeyError, TypeError) as error:
            logger.warning(
                "pre-flight cache %s is damaged (%s): ignoring it, every record is encoded again", self.path, error
            )
            return {}
        return verdicts

    def save(self, verdicts: dict[str, list]) -> None:
        payload = json.dumps(
            {"version": PREFLIGHT_VERSION, "checksum": self._checksum(verdicts), "verdicts": verdicts}, sort_keys=True
        ).encode()
        write_cache(self.path, lambda tmp: tmp.write_bytes(payload), what="pre-flight cache")
