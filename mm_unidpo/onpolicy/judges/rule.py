"""Rule judges: any `fn(record, response) -> float`, named on the command line as `module.path:function`
(the scorers of `mm-unidpo score`, built-ins included; `--judge-arg KEY=VALUE` makes it a factory call)."""

from __future__ import annotations

from typing import Any

from .base import Judge, Judgement
from .scorers import resolve_scorer


def rule_judge(scorer: str, **kwargs: Any) -> Judge:
    """The judge of a rule scorer, resolved as `mm-unidpo score --scorer` resolves it (the module is
    imported only because it was named)."""
    fn = resolve_scorer(scorer, {k: str(v) for k, v in kwargs.items()} or None)

    def judge(items: list[tuple[Any, str]]) -> list[Judgement]:
        return [{"score": fn(record, response)} for record, response in items]

    return judge
