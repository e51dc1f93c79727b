"""What a judge is: a function from (prompt record, response) pairs to judgements, in order.

A judgement is a dict with a finite float `score` (higher is better; the judges here use 0-10, the scale
of Uni-DPO's τ_good) and any details the judge reports (claims, step rewards, correctness...), which are
kept with the sample. Judges are built by factories (`JUDGES` in `__init__`) from keyword options.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Judgement = dict[str, Any]
Judge = Callable[[list[tuple[Any, str]]], list[Judgement]]
