"""What every subcommand's parser shares: one help layout (the module doc kept as written, every default
shown) and argument types that turn a nonsense number into a usage error (exit 2) naming the flag,
instead of a value silently replaced or a failure after the model has loaded.

    p = argparse.ArgumentParser(prog="mm-unidpo x", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--batch-size", type=positive_int, default=8)
"""

from __future__ import annotations

import argparse
import copy
import math
from typing import Any


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The description as written (its examples keep their lines) and "(default: ...)" after every option
    that has a default to show (not a required one, an off flag, None, or a help that already says it)."""

    def _format_action(self, action: argparse.Action) -> str:
        if action.help is None and action.option_strings and not self._hides_default(action):
            action = copy.copy(action)  # an option without help still shows its default
            action.help = "(default: %(default)s)"
        return super()._format_action(action)

    @staticmethod
    def _hides_default(action: argparse.Action) -> bool:
        default = action.default  # by identity: a default of 0 or 0.0 is shown, an off flag (False) is not
        return action.required or default is None or default is False or default == [] or default == argparse.SUPPRESS

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if self._hides_default(action) or "default" in text:
            return text
        return super()._get_help_string(action)


def positive_int(text: str) -> int:
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = _number(text, float)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def unit_interval(text: str) -> float:
    """A probability-like value in (0, 1] (top-p)."""
    value = _number(text, float)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def _number(text: str, kind: Any) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a {'whole ' if kind is int else ''}number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value
