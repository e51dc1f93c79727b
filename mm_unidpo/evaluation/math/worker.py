"""math-verify in a child process with a hard per-call timeout.

sympy can spin for minutes on some answers; math-verify's own timeouts use SIGALRM, which only works
in the main thread of the main interpreter, so they are off (see :mod:`.grade`) and a stuck child is
killed instead.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing as mp
from typing import Any

from .grade import _equivalent, _fast_decision, normalize_answer

GRADING_TIMEOUT_S = 10.0
logger = logging.getLogger(__name__)
_SHARED: GradingWorker | None = None


def _serve(conn: Any) -> None:
    """Child-process loop: (prediction, gold) in, bool out; None stops it."""
    import math_verify  # noqa: F401 -- import before "ready" so the first call's timeout is not spent here

    conn.send("ready")
    while True:
        item = conn.recv()
        if item is None:
            break
        conn.send(_equivalent(*item))


class GradingWorker:
    """Runs :func:`~.grade.is_equivalent`'s check in a spawned child with a hard per-call timeout.

    A call that times out returns False, counts in ``timeouts`` and restarts the child. Decisions that
    need no sympy (equal strings, text answers, two plain numbers) are made in the parent, so the child
    is only started when an answer needs math-verify.
    """

    def __init__(self, timeout: float = GRADING_TIMEOUT_S, startup_timeout: float = 120.0) -> None:
        self.timeout = timeout
        self.startup_timeout = startup_timeout
        self.timeouts = 0
        self._proc: Any = None
        self._conn: Any = None

    def _start(self) -> None:
        ctx = mp.get_context("spawn")  # not fork: the parent may hold torch threads / CUDA state
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child,), daemon=True, name="math-grader")
        self._proc.start()
        child.close()
        if not self._conn.poll(self.startup_timeout) or self._conn.recv() != "ready":
            self._kill()
            raise RuntimeError("the grading worker process did not start")

    def _kill(self) -> None:
        if self._proc is not None and self._proc.pid is not None:  # a process that never started has no kill
            self._proc.kill()
            self._proc.join(5)
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = None

    def equivalent(self, prediction: str | None, gold: str | None) -> bool:
        if prediction is None or gold is None:
            return False
        fast = _fast_decision(normalize_answer(prediction), normalize_answer(gold))
        if fast is not None:
            return fast
        if self._proc is None or not self._proc.is_alive():
            self._start()
        self._conn.send((prediction, gold))
        if self._conn.poll(self.timeout):
            return bool(self._conn.recv())
        self.timeouts += 1
        logger.warning("grading timed out after %.3gs: %r vs %r", self.timeout, prediction[:80], gold[:80])
        self._kill()
        return False

    def close(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            try:
                self._conn.send(None)
                self._proc.join(5)
            except OSError:
                pass
        self._kill()

    def __enter__(self) -> GradingWorker:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def shared_worker(timeout: float) -> GradingWorker:
    """One process-wide worker (closed at exit), for callers that grade with a timeout here and there."""
    global _SHARED
    if _SHARED is None:
        _SHARED = GradingWorker(timeout)
        atexit.register(lambda: _SHARED.close() if _SHARED is not None else None)
    _SHARED.timeout = timeout
    return _SHARED
