"""Content digests of preference records: what the on-disk caches (pre-flight verdicts, reference
log-probs) are keyed by, so a cached value follows its record however the data is reordered.

A record's digest covers its prompt, both responses and the bytes of every image (files are read and
hashed, never trusted by name, size or time). Scores, ids and positions are left out: no cached value
depends on them.
"""

from __future__ import annotations

import io
import json
from typing import Any

from tqdm.auto import tqdm

from mm_unidpo.io import sha256_bytes, sha256_file, sha256_text

from .images import resolve_image_path
from .records import PreferenceRecord


def image_digest(ref: Any, record: PreferenceRecord | None = None) -> str:
    """sha256 of an image's encoded bytes (a PIL image: of its PNG encoding)."""
    if isinstance(ref, (bytes, bytearray)):
        return sha256_bytes(ref)
    if isinstance(ref, str):
        image_root = record.image_root if record is not None else None
        return sha256_file(resolve_image_path(ref, image_root, record))
    buffer = io.BytesIO()  # a PIL image
    ref.save(buffer, format="PNG")
    return sha256_bytes(buffer.getvalue())


def record_digest(record: PreferenceRecord) -> str:
    """sha256 (hex) of a record's texts and image bytes."""
    texts = json.dumps([record.prompt, record.chosen, record.rejected], sort_keys=True, default=str)
    return sha256_text(texts + "".join(image_digest(ref, record) for ref in record.images))


def record_digests(records: list[PreferenceRecord], *, progress: bool = True) -> list[str | None]:
    """The digest of every record; None for one whose image cannot be read now (it is not cached)."""
    out: list[str | None] = []
    for record in tqdm(records, desc="hashing records", unit="record", disable=not progress or len(records) < 1000):
        try:
            out.append(record_digest(record))
        except (OSError, ValueError):  # gone or unreadable since loading: the encode pass reports it
            out.append(None)
    return out
