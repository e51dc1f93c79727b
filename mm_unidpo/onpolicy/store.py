"""Resumable JSON-lines output, one line per item, as the math harness writes its generations.

Lines are appended and flushed (fsync) after every batch, so a run killed at any point (even `kill -9`)
keeps every finished batch; the rerun drops a half-written last line, skips the items already there and
continues. The settings that shape the output are kept beside it (`<out>.settings.json`): a rerun with
other settings is refused unless `overwrite`, so one file never mixes two runs. When the run is complete
the file is rewritten in input order (temp file + rename).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mm_unidpo.io import append_jsonl, write_jsonl

logger = logging.getLogger(__name__)


def settings_path(out: str | os.PathLike) -> Path:
    return Path(str(out) + ".settings.json")


def read_lines(path: str | os.PathLike) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for every line of a JSON-lines file; a line that is not a JSON object is an
    error naming it."""
    out = []
    with open(path, encoding="utf-8") as f:
        for number, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                line = json.loads(text)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}, line {number}: not JSON ({error})") from None
            if not isinstance(line, dict):
                raise ValueError(f"{path}, line {number}: expected a JSON object, got {type(line).__name__}")
            out.append((number, line))
    return out


class ResumableLines:
    """Output lines keyed by the item's `index`; `done` holds what a previous run finished."""

    def __init__(
        self,
        path: str | os.PathLike,
        settings: Mapping[str, Any],
        *,
        overwrite: bool = False,
        expected: Mapping[int, Any] | None = None,
    ):
        """`expected`: index -> id of the items of this run; a finished line whose id differs means the
        input changed since, which is an error rather than a silent mix."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        meta = settings_path(self.path)
        settings = json.loads(json.dumps(settings))  # as it reads back from disk
        if overwrite:
            self.path.unlink(missing_ok=True)
        elif self.path.exists() and meta.exists():
            old = json.loads(meta.read_text(encoding="utf-8"))
            diff = {
                k: (old.get(k), settings.get(k))
                for k in sorted(set(old) | set(settings))
                if old.get(k) != settings.get(k)
            }
            if diff:
                raise ValueError(
                    f"{self.path} holds output made with other settings {diff} (old, new); "
                    "use another --out or --overwrite"
                )
        elif self.path.exists():
            raise ValueError(
                f"{self.path} exists but has no {meta.name}: not a resumable output of this "
                "command; use another --out or --overwrite"
            )
        meta.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
        self.done = self._read_done(expected or {})

    def _read_done(self, expected: Mapping[int, Any]) -> dict[int, dict[str, Any]]:
        if not self.path.exists():
            return {}
        raw = self.path.read_bytes()
        done, dropped = {}, 0
        for text in raw.split(b"\n"):
            if not text.strip():
                continue
            try:
                line = json.loads(text)
                done[int(line["index"])] = line
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                dropped += 1
        for index, line in done.items():
            if index in expected and line.get("id") != expected[index]:
                raise ValueError(
                    f"{self.path}: item {index} was id {line.get('id')!r}, the input now has "
                    f"{expected[index]!r}; the input changed -- use another --out or --overwrite"
                )
        if dropped or (raw and not raw.endswith(b"\n")):
            logger.warning("%s: dropped %d unreadable line(s) left by an interrupted run", self.path, dropped)
            write_jsonl(self.path, [done[i] for i in sorted(done)])
        return done

    def append(self, lines: Sequence[Mapping[str, Any]]) -> None:
        """Write finished lines and make them durable before going on."""
        append_jsonl(self.path, lines)
        for line in lines:
            self.done[int(line["index"])] = dict(line)

    def finish(self, order: Sequence[int]) -> list[dict[str, Any]]:
        """The lines in `order` (input order), rewritten so in the file."""
        lines = [self.done[i] for i in order if i in self.done]
        write_jsonl(self.path, lines)
        return lines


def chunks(order: Sequence[int], size: int) -> list[list[int]]:
    """Fixed batches over the whole input: a resumed run redoes a batch with the same items and seed,
    so its output equals an uninterrupted run's."""
    return [list(order[i : i + size]) for i in range(0, len(order), size)]
