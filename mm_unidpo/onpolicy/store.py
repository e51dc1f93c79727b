"""Resumable JSON-lines output, one line per item, as the math harness writes its generations.

Lines are appended and flushed (fsync) after every batch, so a run killed at any point (even `kill -9`)
keeps every finished batch; the rerun drops a half-written last line, skips the items already there and
continues. What a rerun may reuse is decided by content, never by position alone:

* every line carries `input_sha256`, the digest of the input that made it (the prompt and its image
  bytes, or the sample line judged): a line whose input changed is redone, and one whose input moved (a
  row removed above it) is reused at its new index;
* the settings that shape the output are kept beside it (`<out>.settings.json`, with the input file's
  digest and whether the run finished): a rerun with other settings is refused unless `overwrite`, so
  one file never mixes two runs;
* a lock (`<out>.lock`) keeps a second process off the same output, and `--out` may not be the input;
* a rerun with a smaller `--limit` keeps the earlier run's further lines (same input file): a finished
  file never shrinks.

When the run is complete the file is rewritten in input order (temp file + rename).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from mm_unidpo.errors import UsageError
from mm_unidpo.io import append_jsonl, sha256_file, write_atomic, write_jsonl

logger = logging.getLogger(__name__)

DIGEST = "input_sha256"  # the field of every output line: the digest of the input that made it
_INFO = ("input", "finished")  # settings recorded for the reader, not compared on a rerun
_HELD: dict[Path, IO[str]] = {}  # this process's output locks (the lock is per process, not per object)


def settings_path(out: str | os.PathLike) -> Path:
    return Path(str(out) + ".settings.json")


def read_settings(out: str | os.PathLike) -> dict[str, Any] | None:
    """The settings file of an output (None if it has none); a damaged one is an error naming it."""
    meta = settings_path(out)
    if not meta.exists():
        return None
    try:
        value = json.loads(meta.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{meta} is damaged ({error}): delete it with {out}, or use --overwrite") from None
    if not isinstance(value, dict):
        raise ValueError(f"{meta} is not a settings object: delete it with {out}, or use --overwrite")
    return value


def check_finished(path: str | os.PathLike, made_by: str) -> None:
    """Refuse an input file that its command has not finished (a run killed or still going)."""
    settings = read_settings(path)
    if settings is not None and settings.get("finished") is False:
        raise ValueError(f"{path} is unfinished: rerun the {made_by} command that writes it to complete it")


def lock_output(out: str | os.PathLike) -> tuple[Path, IO[str]]:
    """Hold `<out>.lock` for this process (a command takes it before loading a model, so a second process
    on the same --out is refused in a second): another process's lock is refused; this process's own (a
    run that raised) is taken over. Released by `ResumableLines.finish`, or when the process exits."""
    path = Path(str(out) + ".lock").resolve()
    if path in _HELD:
        return path, _HELD[path]
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")  # noqa: SIM115 -- held until finish() or exit
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ValueError(
            f"another process is writing {out} (it holds {path.name}); wait for it to finish or use another --out"
        ) from None
    _HELD[path] = handle
    return path, handle


def check_out(out: str | os.PathLike, source: Any) -> None:
    """Refuse an output that is the input file (the run would destroy its own input)."""
    if isinstance(source, (str, os.PathLike)) and Path(source).resolve() == Path(out).resolve():
        raise UsageError(f"--out {out} is the input file: it would be overwritten; choose another --out")


def input_file(source: Any) -> dict[str, Any] | None:
    """The input file's path and digest, for the settings record (None for a hub id or a folder)."""
    if not isinstance(source, (str, os.PathLike)) or not Path(source).is_file():
        return None
    return {"file": str(Path(source).resolve()), "sha256": sha256_file(source)}


def read_lines(path: str | os.PathLike) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for every line of a JSON-lines file; a line that is not a JSON object (or
    bytes that are not UTF-8) is an error naming the file and the line."""
    out = []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ValueError(f"{path}, line {number}: byte {error.start} is not UTF-8 (save it as UTF-8)") from None
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
    """Output lines keyed by the item's `index`; `done` holds what a previous run finished for this input."""

    def __init__(
        self,
        path: str | os.PathLike,
        settings: Mapping[str, Any],
        *,
        inputs: Mapping[int, str],
        source: Any = None,
        overwrite: bool = False,
    ):
        """`inputs`: index -> digest of each item's input; `source`: the input file (refused as the output,
        its digest recorded)."""
        self.path = Path(path)
        check_out(self.path, source)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock()
        self.inputs = dict(inputs)
        self.settings = {**json.loads(json.dumps(settings)), "input": input_file(source), "finished": False}
        old = None if overwrite else read_settings(self.path)
        if overwrite:
            self.path.unlink(missing_ok=True)
        elif self.path.exists() and old is not None:
            diff = {
                k: (old.get(k), self.settings.get(k))
                for k in sorted(set(old) | set(self.settings))
                if k not in _INFO and old.get(k) != self.settings.get(k)
            }
            if diff:
                raise ValueError(
                    f"{self.path} holds output made with other settings {diff} (old, new); "
                    "use another --out or --overwrite"
                )
        elif self.path.exists():
            raise ValueError(
                f"{self.path} exists but has no {settings_path(self.path).name}: not a resumable output of "
                "this command; use another --out or --overwrite"
            )
        same_file = old is not None and old.get("input") is not None and old.get("input") == self.settings["input"]
        self.done, self.kept = self._read_done(same_file)
        self._write_settings()

    def _lock(self) -> None:
        self._lock_path, self._lock_file = lock_output(self.path)

    def _write_settings(self) -> None:
        text = json.dumps(self.settings, indent=2) + "\n"
        write_atomic(settings_path(self.path), lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def _read_done(self, same_file: bool) -> tuple[dict[int, dict[str, Any]], list[dict[str, Any]]]:
        """The lines still valid for this input (moved ones at their new index), and those of items beyond
        this run (kept when the input file is the same: a smaller --limit)."""
        if not self.path.exists():
            return {}, []
        raw = self.path.read_bytes()
        lines, dropped = [], 0
        for text in raw.split(b"\n"):
            if not text.strip():
                continue
            try:
                line = json.loads(text)
                int(line["index"])
                lines.append(line)
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError):
                dropped += 1
        by_digest = {line.get(DIGEST): line for line in lines if line.get(DIGEST)}
        done = {i: {**by_digest[d], "index": i} for i, d in self.inputs.items() if d in by_digest}
        used = {self.inputs[i] for i in done}
        rest = [line for line in lines if line.get(DIGEST) not in used]
        kept = [line for line in rest if same_file and int(line["index"]) not in self.inputs]
        stale = len(rest) - len(kept)
        if stale:
            logger.warning("%s: %d line(s) made from another input: redone or dropped", self.path, stale)
        if dropped or stale or (raw and not raw.endswith(b"\n")):
            if dropped:
                logger.warning("%s: dropped %d unreadable line(s) left by an interrupted run", self.path, dropped)
            write_jsonl(self.path, [*(done[i] for i in sorted(done)), *kept])
        return done, kept

    def append(self, lines: Sequence[Mapping[str, Any]]) -> None:
        """Write finished lines (each with its input digest) and make them durable before going on."""
        stamped = [{**line, DIGEST: self.inputs[int(line["index"])]} for line in lines]
        append_jsonl(self.path, stamped)
        for line in stamped:
            self.done[int(line["index"])] = line

    def finish(self, order: Sequence[int]) -> list[dict[str, Any]]:
        """The lines in `order` (input order), rewritten so in the file (after them, the earlier run's
        lines beyond this run's input); marks the output finished and releases the lock."""
        lines = [self.done[i] for i in order if i in self.done]
        if self.kept:
            logger.info("%s: kept %d line(s) beyond this run's input from an earlier run", self.path, len(self.kept))
        write_jsonl(self.path, [*lines, *sorted(self.kept, key=lambda line: int(line["index"]))])
        self.settings["finished"] = len(lines) == len(order)
        self._write_settings()
        self.close()
        return lines

    def close(self) -> None:
        if _HELD.get(self._lock_path) is self._lock_file:
            del _HELD[self._lock_path]
            self._lock_path.unlink(missing_ok=True)
            self._lock_file.close()


def write_json(path: Path, value: Any) -> None:
    """A step's record, atomically: a crash leaves the old file or none, never a cut one."""
    text = json.dumps(value, indent=2) + "\n"
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(
            f"{path} is damaged ({error}); delete it and rerun: the finished steps are kept, the rest redone"
        ) from None


def chunks(order: Sequence[int], size: int) -> list[list[int]]:
    """Fixed batches over the whole input: a resumed run redoes a batch with the same items and seed,
    so its output equals an uninterrupted run's."""
    return [list(order[i : i + size]) for i in range(0, len(order), size)]


class Progress:
    """A tqdm bar on a terminal; elsewhere (a log file, a pipe, a batch job) a log line every tenth of the
    items, so a long run shows it is alive without a bar's carriage returns."""

    def __init__(self, total: int, initial: int, desc: str, unit: str, enabled: bool | None = None):
        from tqdm.auto import tqdm  # lazy: keeps `mm-unidpo pairs` light

        self.bar = tqdm(
            total=total,
            initial=initial,
            desc=desc,
            unit=unit,
            disable=None if enabled is None else not enabled,
            leave=False,
        )
        self.total, self.done, self.desc, self.unit = total, initial, desc, unit
        self.step = max(1, total // 10)
        self.logged = initial // self.step

    def update(self, n: int) -> None:
        self.bar.update(n)
        self.done += n
        if self.bar.disable and (self.done // self.step > self.logged or self.done == self.total):
            self.logged = self.done // self.step
            logger.info("%s: %d/%d %ss", self.desc, self.done, self.total, self.unit)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()
