"""Durable files and content digests: the one place the package writes a file atomically, appends
lines durably, or hashes something to key a cache or check a file.

    write_atomic(path, lambda tmp: tmp.write_bytes(data))   # a reader never sees a partial file
    write_cache(path, write, what="reference cache")         # the same; a failure is a warning
    write_jsonl(path, rows)                                   # a JSON-lines file, atomically
    append_jsonl(path, rows)                                  # appended, flushed and fsynced
    sha256_json(obj), sha256_text(text), sha256_file(path)   # hex digests (also of bytes and of chunks)

Atomic writes go to a hidden temporary name beside the target (same file system) and are renamed onto it
when complete; the temporary file is removed whatever happens.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CHUNK = 1 << 20  # bytes read at a time when hashing a file


def write_atomic(path: str | os.PathLike[str], write: Callable[[Path], Any]) -> Path:
    """`write(tmp)` to a temporary file beside `path`, then rename it onto `path`: a reader sees the old
    file or the complete new one, never a partial one. Errors propagate; the temporary file is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_cache(path: str | os.PathLike[str], write: Callable[[Path], Any], *, what: str) -> bool:
    """`write_atomic` for a cache: a file that cannot be written (disk full...) is a warning, not a failure,
    since the values are still in memory. Returns whether it was written."""
    try:
        write_atomic(path, write)
        return True
    except OSError as error:
        logger.warning("could not write the %s %s (%s); continuing without it", what, path, error)
        return False


def _jsonl(rows: Iterable[Mapping[str, Any]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def write_jsonl(path: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]]) -> Path:
    """Rewrite a JSON-lines file (one object a line, UTF-8) atomically."""
    text = _jsonl(rows)
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def append_jsonl(path: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """Append rows to a JSON-lines file and make them durable (flush + fsync) before returning, so a
    process killed afterwards (even `kill -9`, or a power cut) keeps them."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(_jsonl(rows))
        f.flush()
        os.fsync(f.fileno())


def sha256_json(value: Any, *, default: Callable[[Any], Any] | None = None) -> str:
    """sha256 (hex) of `value` as JSON with sorted keys: equal for equal content whatever the key order.
    `default`: how to write what JSON cannot (e.g. `str`); without it such a value is a TypeError."""
    return sha256_text(json.dumps(value, sort_keys=True, default=default))


def sha256_text(text: str) -> str:
    return sha256_bytes(text.encode())


def sha256_bytes(data: bytes | bytearray) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_chunks(chunks: Iterable[bytes]) -> str:
    """sha256 (hex) of the concatenation of `chunks`, without holding them all in memory."""
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """sha256 (hex) of a file's bytes, read in chunks."""
    with open(path, "rb") as f:
        return sha256_chunks(iter(lambda: f.read(CHUNK), b""))
