"""What an objective's parameters may be: allowed ranges and values, checked where the objective lives.

Each `Objective` (registry.py) declares rules for its own parameters on top of the shared ones below
(`beta` > 0 everywhere, `label_smoothing` in [0, 0.5), ...). `check_value` turns a bad value into one
`ParamError` whose message starts with the key (`loss.params.beta must be > 0, got -1`), so the train
config, a mixture component and the Python API all report the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

# The loss computes in float32: a parameter beyond it becomes inf there.
FLOAT32_MAX = float(torch.finfo(torch.float32).max)

BALANCE_SPACES = (None, "policy", "ratio")
F_DIVERGENCES = ("reverse_kl", "forward_kl", "js_divergence", "alpha_divergence")


class ParamError(ValueError):
    """A bad objective parameter; the message names the key."""


@dataclass(frozen=True)
class Range:
    """A number between `low` and `high` (open ends where said); `optional`: null is allowed too."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    optional: bool = False
    why: str = ""  # appended to the error: what goes wrong outside the range

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return "a finite number"

    def contains(self, value: float) -> bool:
        if self.low is not None and not (value > self.low if self.low_open else value >= self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)


@dataclass(frozen=True)
class OneOf:
    values: tuple[Any, ...]

    def describe(self) -> str:
        return "one of " + ", ".join("null" if v is None else repr(v) for v in self.values)


Rule = Range | OneOf

# Rules every objective that takes the parameter shares (an objective's own rules override them).
COMMON_RULES: dict[str, Rule] = {
    "beta": Range(0.0, low_open=True, why="a beta <= 0 rewards the rejected response (or removes the preference)"),
    "label_smoothing": Range(0.0, 0.5, high_open=True),
    "balance": OneOf(BALANCE_SPACES),
    "balance_clip": Range(0.0, low_open=True),
    "f_divergence_type": OneOf(F_DIVERGENCES),
    "ld_alpha": Range(0.0, 1.0, optional=True),
    "rpo_alpha": Range(0.0, optional=True),
    "discopop_tau": Range(0.0, low_open=True),
    "gamma": Range(0.0),
    "uni_gamma": Range(0.0),
    "uni_beta": Range(0.0, low_open=True),
}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _numeric_text(value: Any) -> bool:
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False


def check_value(key: str, value: Any, default: Any, rule: Rule | None) -> None:
    """Raise `ParamError` naming `key` when `value` does not fit its default's type or its rule."""
    quoted = (
        " (quoted in the YAML? write numbers without quotes)" if isinstance(value, str) and _numeric_text(value) else ""
    )
    if isinstance(rule, OneOf):
        if value not in rule.values:
            raise ParamError(f"{key} must be {rule.describe()}, got {value!r}")
        return
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ParamError(f"{key} must be true/false, got {value!r} ({type(value).__name__})")
        return
    if not (_is_number(default) or isinstance(rule, Range)):
        return
    if value is None and default is None:
        return
    if not _is_number(value):
        expected = "a number or null" if default is None else "a number"
        raise ParamError(f"{key} must be {expected}, got {value!r} ({type(value).__name__}){quoted}")
    if not math.isfinite(value) or abs(value) > FLOAT32_MAX:
        raise ParamError(f"{key} must be finite (within float32, where the loss computes), got {value}")
    if isinstance(rule, Range) and not rule.contains(value):
        raise ParamError(f"{key} must be {rule.describe()}, got {value}" + (f": {rule.why}" if rule.why else ""))
