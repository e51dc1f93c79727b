"""Judges: each one factory function (options -> judge) and one line in `JUDGES`.

    judge = make_judge("objects", vocabulary="coco")
    judge = make_judge("prm", model="Qwen/Qwen2.5-Math-PRM-7B", trust_remote_code=True, benchmark="gsm8k")
    judgements = judge([(record, "A dog on a sofa."), ...])     # [{"score": 6.7, ...}, ...]

A judge maps (prompt record, response) pairs to judgements (`base.py`). "module.path:function" as the
kind is the rule judge with that scorer.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from .base import Judge, Judgement
from .objects import objects_judge
from .prm import prm_judge
from .reward_model import reward_model_judge
from .rule import rule_judge
from .vlm import VLMJudge, vlm_judge

JUDGES: dict[str, Callable[..., Judge]] = {
    "rule": rule_judge,  # fn(record, response) -> float, named as module:function
    "objects": objects_judge,  # CHAIR-like 0-10 caption score against ground-truth objects
    "reward_model": reward_model_judge,  # a text reward model (sequence classification, one output)
    "prm": prm_judge,  # a math process reward model: 10 x min step reward
    "vlm": vlm_judge,  # a VLM verifies each claim: 10 x share of claims accepted
}

__all__ = ["JUDGES", "Judge", "Judgement", "VLMJudge", "judge_options", "make_judge"]


def judge_options(kind: str) -> list[str]:
    """The keyword options the factory of `kind` takes."""
    if ":" not in kind and kind not in JUDGES:
        raise ValueError(
            f"unknown judge {kind!r}; known: {', '.join(JUDGES)} (or module.path:function, path/to/file.py:function)"
        )
    factory = JUDGES["rule" if ":" in kind else kind]
    return [name for name, p in inspect.signature(factory).parameters.items() if p.kind is not p.VAR_KEYWORD]


def make_judge(kind: str, **options: Any) -> Judge:
    """The judge `kind` (a key of `JUDGES`, or "module.path:function" for a rule scorer) built from
    `options`; an option the factory does not take is an error that lists the ones it does."""
    if ":" in kind:
        options = {"scorer": kind, **options}
        kind = "rule"
    if kind not in JUDGES:
        raise ValueError(
            f"unknown judge {kind!r}; known: {', '.join(JUDGES)} (or module.path:function, path/to/file.py:function)"
        )
    factory = JUDGES[kind]
    takes_any = any(p.kind is p.VAR_KEYWORD for p in inspect.signature(factory).parameters.values())
    unknown = sorted(set(options) - set(judge_options(kind)))
    if unknown and not takes_any:
        raise ValueError(f"judge {kind!r} takes no option(s) {unknown}; it takes {judge_options(kind)}")
    return factory(**options)
