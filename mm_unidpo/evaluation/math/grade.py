"""Answer equivalence: normalisation, exact/tolerant number comparison (`numeric.py`), then math-verify with guards.

``is_equivalent(prediction, gold)`` decides in this order (the first rule that applies decides):

1. Both strings are normalised (:func:`normalize_answer`); equal up to whitespace -> equal.
2. A multiple-choice gold ``\\text{(C)}`` and a prediction that is one letter and its value
   (``\\text{(C) } 27``) are compared by the letter; other text answers (``\\text{Evelyn}``, ``\\text{(C)}``,
   "ellipse") as lower-cased text.
3. Two plain numbers (integers, decimals, ``1,000``, ``\\frac{3}{4}``, ``3/4``, ``1\\frac{4}{5}``, ``4.5e33``)
   are compared numerically: an integer gold needs exactly its value (``204.0`` and ``2.04e2`` are 204,
   ``204.01`` is not); otherwise exactly when both are exact (integers and fractions of integers), else
   within a relative tolerance of 1e-4 (``REL_TOL``).
4. Otherwise math-verify (``verify(parse(gold), parse(pred))``, gold first) decides, with its own
   signal-based timeouts switched off (``parsing_timeout=None``, ``timeout_seconds=None``): they raise
   outside the main thread. Use :class:`~.worker.GradingWorker` for a hard per-call timeout (this module
   imports nothing from there: the worker builds on it).

Decisions (documented here because the benchmarks disagree on them):

* percent: ``\\%`` is dropped, so ``50\\%`` equals ``50`` but not ``0.5``;
* degrees: ``^\\circ`` is dropped, so ``90^\\circ`` equals ``90`` but not ``\\frac{\\pi}{2}``;
* units: a trailing ``\\text{ cm}`` / ``\\mbox{ inches}^2`` / ``\\mathrm{m}`` (also ``\\mathrm{~erg} /
  \\mathrm{s}``) after a number is dropped, and so are plain words set apart by a space, 3+ letters long
  ("18 dollars", "41.8 kcal"), or short units (``5cm``, ``5 kg``); letters of a product (``2ab``, ``3xy``)
  and names of functions / constants (``4 pi``) are no units. A currency sign (``\\$``) is dropped;
* assignments: a single-variable left side is dropped, so ``x=3`` equals ``3`` and ``y=2x+3`` equals
  ``2x+3`` (``x \\in [-2,7]`` equals ``[-2,7]``);
* base subscripts: ``52_8`` equals ``52`` (the base is given by the question);
* thousands separators: ``\\d{1,3}(,\\d{3})+`` is one number (``1,000`` = 1000), never a list;
* a decimal within 1e-4 (relative) of an exact non-integer constant counts (``3.14159`` for ``\\pi``,
  ``4.667`` for ``\\frac{14}{3}``); a number never equals a non-constant expression. Qwen2.5-Math's
  evaluator (``math_equal`` after its ``extract_answer``, with its pinned sympy 1.12 / antlr4 4.11.1)
  accepts ``4.667`` for ``\\frac{14}{3}`` but **not** ``3.14159`` for ``\\pi``, either way round: sympy
  1.12's ``parse_latex`` reads ``\\pi`` as a plain symbol named pi, so its numeric check has nothing to
  evaluate (checked by running it; see eval/README.md for the other differences).

Guards against math-verify false positives (each found with math-verify 0.9.0):

* G1 wrap: answers are parsed as ``$...$``. Unwrapped, math-verify's plain-expression extractor takes
  the first number, so ``4`` "equals" ``4\\sqrt{2}``, ``4\\pi``, ``2i`` and ``3R^2`` equals ``3``.
* G2 bare number vs expression: a plain number equals the other side only if that side is a constant
  of the same value (``4`` vs ``4\\sqrt{2}``: 4 != 5.657 -> not equal).
* G3 exact constants: math-verify compares numbers rounded to 6 decimals, so
  ``\\frac{1}{2^{99}}`` "equals" ``\\frac{1}{2^{98}}`` and ``\\frac{1}{2004!}`` equals ``\\frac{1}{2006!}``;
  two constants must also agree to a relative 1e-4 (and exactly when both are rationals).
* G4 truncated parse: math-verify drops what it cannot parse (``1 - \\frac{1}{\\operatorname{e}}`` parses as
  ``1``; ``\\frac{1}{\\mathit{e}}`` as the text ``\\frac{1}{``), so ``1 - 1/e`` "equals" ``1 + 1/e``; a parse
  that lost letters or digits of the input is not trusted (``\\mathrm{e}``/``\\mathit{e}`` are also
  rewritten as ``e`` before parsing).
* G5 scientific notation: ``4.5e33`` parses as ``4.5 * E * 33`` (Euler's number); e-notation is
  rewritten as ``\\times 10^{33}`` (and plain numbers never reach math-verify).
* G6 set vs tuple: math-verify matches the interval-or-pair ``(1,2)`` against the set ``\\{1,2\\}`` (both
  ways); a set never equals a tuple or interval here.
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache
from typing import Any

from .numeric import ABS_TOL, REL_TOL, Number, numbers_close, parse_number

# --------------------------------------------------------------------------- normalisation

_UNITS = r"text|mbox|mathrm|textrm|textnormal"
_WRAPPERS = _UNITS + r"|textbf|textit|mathbf|mathit|mathsf|boldsymbol"
# "... \mathrm{~erg} / \mathrm{s}": a unit, possibly divided or multiplied by the one before it
_UNIT_WRAPPED_RE = re.compile(
    rf"^(?P<head>.*?[\d}}])\s*(?:/|\\cdot)?\s*\\(?:{_UNITS})\s*\{{[^{{}}]*\}}(?:\^\{{?-?\d\}}?)?$"
)
_UNIT_WORDS_RE = re.compile(r"^(?P<head>.*[\d}])(?P<gap>\s*)(?P<words>[A-Za-z]+(?:\s+[A-Za-z]+)*)(?:\^\{?-?\d\}?)?$")
# Trailing plain words are units when set apart by a space and 3+ letters long ("18 dollars", "41.8 kcal") or a
# short unit (also attached: "5cm"); never letters of a product ("2ab", "3xy") or a function / constant ("4 pi").
_SHORT_UNITS = frozenset("cm mm km nm kg mg ml ft lb lbs oz hr hrs mi yd mph kph sq in kW kJ eV Hz".lower().split())
_MATH_NAMES = frozenset(
    [
        "pi",
        "sqrt",
        "sin",
        "cos",
        "tan",
        "cot",
        "sec",
        "csc",
        "log",
        "ln",
        "exp",
        "arcsin",
        "arccos",
        "arctan",
        "sinh",
        "cosh",
        "tanh",
        "mod",
    ]
)
_UNWRAP_RE = re.compile(rf"\\(?:{_WRAPPERS})\s*\{{([^{{}}]*)\}}")
_ASSIGN_RE = re.compile(r"^[A-Za-z](?:_\{?\w+\}?)?\s*(?:=|\\in(?![A-Za-z]))\s*(?P<rhs>[^=]+)$")
_BASE_RE = re.compile(r"^(\d+)_\{?\d+\}?$")
_SCI_RE = re.compile(r"(\d)[eE]([+-]?\d+)(?![\w.])")


def normalize_answer(answer: str) -> str:
    """Canonical string form of an answer (see the module docstring for what is dropped)."""
    s = answer.strip()
    s = re.sub(r"^\\\(|\\\)$|^\\\[|\\\]$", "", s).strip().strip("$").strip()
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\dbinom", "\\binom")
    s = re.sub(r"\\(?:left|right|displaystyle)(?![A-Za-z])", "", s)
    s = re.sub(r"(?<!\\)\\!", "", s)  # negative thin space, as in 10,\!080
    s = re.sub(r"(?<=\d)\\,(?=\d{3})", "", s)  # thin-space thousands separator: 10\,000
    s = re.sub(r"(?<!\\)\\[,;:> ]|~", " ", s)  # (not the row break \\ of a matrix)
    s = s.replace("{,}", ",")
    s = re.sub(r"\^\s*\{?\s*\\circ\s*\}?|°|\\degree", "", s)
    s = s.replace("\\%", "").replace("%", "").replace("\\$", "").replace("$", "")
    s = re.sub(r"\\math(?:rm|it)\{\s*([ei])\s*\}", r"\1", s)  # Euler's e / imaginary i, not units
    # "5 \text{ or } 6" / "19, 46, and 82": a list of values
    s = re.sub(r"(?<=[\d}).])\s*,?\s*(?:\\text\s*\{\s*(?:and|or)\s*\}|(?:and|or)(?=\s))\s*", ", ", s)
    s = re.sub(r"\s+", " ", s).strip().rstrip(".").strip()
    s = re.sub(r"^(?:=|\\approx|\\sim)\s*", "", s)  # "\approx 3.14"
    for _ in range(3):  # "\mathrm{kcal} \mathrm{m}^{-2}": several trailing units
        m = _UNIT_WRAPPED_RE.match(s) or _unit_words(s)
        if not m or not re.search(r"\d", m["head"]):
            break
        s = m["head"].strip()
    s = _UNWRAP_RE.sub(lambda m: m.group(1), s).strip()
    m = _ASSIGN_RE.match(s)
    if m:
        s = m["rhs"].strip()
    s = _BASE_RE.sub(r"\1", s)
    return s


def _unit_words(s: str) -> re.Match | None:
    m = _UNIT_WORDS_RE.match(s)
    if not m:
        return None
    words = [w.lower() for w in m["words"].split()]
    if any(w in _MATH_NAMES for w in words) or not (m["gap"] or words[0] in _SHORT_UNITS):
        return None
    return m if all(w in _SHORT_UNITS or len(w) >= 3 for w in words) else None


def _squash(s: str) -> str:
    return re.sub(r"\s+", "", s)


def is_text_answer(s: str) -> bool:
    """A word answer ("Evelyn", "even", "north east") or a multiple-choice letter in parentheses."""
    if re.fullmatch(r"\(\s*[A-Za-z]\s*\)", s):
        return True
    return bool(re.fullmatch(r"[A-Za-z][A-Za-z '\-]*", s) and re.search(r"[A-Za-z]{3,}", s))


def _text_key(s: str) -> str:
    return re.sub(r"[^a-z0-9]", "", s.lower())


_CHOICE_RE = re.compile(r"\(\s*([A-Ea-e])\s*\)")


def _choice_with_value(pred: str, gold: str) -> bool | None:
    """A gold that is a choice letter "(C)" and a prediction "(C) 27" (the letter, then its value): the letters
    decide. None when this is not the case (a second letter in the prediction makes it no single choice)."""
    gold_letter = re.fullmatch(r"\(\s*([A-Ea-e])\s*\)", gold)
    pred_letter = re.match(r"\(\s*([A-Ea-e])\s*\)\s*[:.]?\s*\S", pred)
    if not gold_letter or not pred_letter or len(_CHOICE_RE.findall(pred)) != 1:
        return None
    return gold_letter.group(1).lower() == pred_letter.group(1).lower()


# --------------------------------------------------------------------------- math-verify


class _DropTimeoutWarning(logging.Filter):
    """math-verify warns once that timeouts are off; here they are off on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_DropTimeoutWarning())


@lru_cache(maxsize=16384)
def _mv_parse(latex: str) -> tuple:
    from math_verify import parse

    # G1: wrapped in $...$ so the LaTeX extractor reads the whole answer (see module docstring).
    return tuple(parse(f"${latex}$", parsing_timeout=None))


def _mv_verify(gold: tuple, pred: tuple) -> bool:
    from math_verify import verify

    return bool(verify(list(gold), list(pred), timeout_seconds=None))


def _content(s: str, digits: bool = True) -> set[str]:
    chars = r"[a-z0-9]" if digits else r"[a-z]"
    # Names, not content: environments (pmatrix) and multi-letter operator names (arcsin).
    s = re.sub(r"\\(?:begin|end)\s*\{[^{}]*\}|\\operatorname\s*\{[A-Za-z]{2,}\}", " ", s)
    return set(re.findall(chars, re.sub(r"\\[A-Za-z]+", " ", s).lower()))


def _covers(source: str, parsed: tuple) -> bool:
    """G4: math-verify dropped nothing: its matched text keeps every letter and digit of the input, and
    its expression every letter (digits change under evaluation: 3^2 -> 9)."""
    matched = next((x for x in parsed if isinstance(x, str)), None)
    if matched is not None and not _content(source) <= _content(matched):
        return False
    expr = next((x for x in parsed if not isinstance(x, str)), None)
    return expr is None or _content(source, digits=False) <= _content(str(expr), digits=False)


def _constant(expr: Any) -> tuple[Any, bool] | None:
    """(sympy value, exact) if ``expr`` is a finite numeric constant, else None."""
    import sympy

    if not isinstance(expr, sympy.Basic) or not getattr(expr, "is_number", False) or expr.free_symbols:
        return None
    if expr.has(sympy.zoo, sympy.nan, sympy.oo, -sympy.oo):
        return None
    return expr, not expr.has(sympy.Float)


def _constants_close(a: Any, b: Any) -> bool:
    import sympy

    try:
        diff = abs(sympy.N(a - b, 30))
        a_abs, b_abs = abs(sympy.N(a, 30)), abs(sympy.N(b, 30))
        if a_abs == 0 or b_abs == 0:
            return bool(diff <= ABS_TOL)
        return bool(diff <= REL_TOL * max(a_abs, b_abs))
    except (TypeError, ValueError, ArithmeticError):
        return False


def _symbolic_equivalent(pred: str, gold: str, pred_num: Number | None, gold_num: Number | None) -> bool:
    import sympy

    def prepare(s: str) -> str:
        return _SCI_RE.sub(r"\1\\times10^{\2}", s)  # G5: 4.5e33 is not 4.5*E*33

    gold, pred = prepare(gold), prepare(pred)
    gold_p, pred_p = _mv_parse(gold), _mv_parse(pred)
    if not gold_p or not pred_p or not (_covers(gold, gold_p) and _covers(pred, pred_p)):
        return False  # G4 (on the rewritten strings: the "e" of 1e-5 is gone there)
    gold_c = (sympy.Rational(gold_num[0]), gold_num[1]) if gold_num else _constant(gold_p[0])
    pred_c = (sympy.Rational(pred_num[0]), pred_num[1]) if pred_num else _constant(pred_p[0])
    if (gold_num is not None or pred_num is not None) and (gold_c is None or pred_c is None):
        return False  # G2: a plain number never equals a non-constant
    if gold_c is not None and pred_c is not None:  # G2/G3: constants must agree numerically
        if not _constants_close(gold_c[0], pred_c[0]):
            return False
        if gold_c[1] and pred_c[1]:  # both exact: rationals exactly, otherwise math-verify's symbolic check
            if gold_c[0].is_Rational and pred_c[0].is_Rational:
                return bool(gold_c[0] == pred_c[0])
            return _mv_verify(gold_p, pred_p)
        return True
    return _mv_verify(gold_p, pred_p)


def _split_top(inner: str) -> list[str]:
    """Split at commas outside brackets."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(inner):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(inner[start:i])
            start = i + 1
    return [*parts, inner[start:]]


def _outer(s: str) -> tuple[str, str, str] | None:
    """(open, inner, close) when one bracket pair -- (), [], or \\{\\} -- encloses the whole string."""
    s = s.strip()
    for open_, close in (("\\{", "\\}"), ("(", ")"), ("[", "]"), ("(", "]"), ("[", ")")):
        if s.startswith(open_) and s.endswith(close):
            inner = s[len(open_) : len(s) - len(close)]
            depth = 0
            for ch in inner:  # "(1,2) \\cup (3,4)" starts and ends with brackets but is not one pair
                depth += {"(": 1, "[": 1, "{": 1, ")": -1, "]": -1, "}": -1}.get(ch, 0)
                if depth < 0:
                    return None
            return (open_, inner, close) if depth == 0 else None
    return None


def _set_vs_tuple(pred: str, gold: str) -> bool:
    """G6: one side is a set ``\\{a, b\\}`` and the other a tuple or interval ``(a, b)`` / ``[a, b]``."""
    kinds = []
    for s in (pred, gold):
        outer = _outer(s)
        if outer is None or len(_split_top(outer[1])) < 2:
            return False
        kinds.append(outer[0] == "\\{")
    return kinds[0] != kinds[1]


def _fast_decision(pred: str, gold: str) -> bool | None:
    """The decision when it needs no sympy (rules 1-3), else None."""
    if not pred or not gold:
        return False
    if _squash(pred) == _squash(gold):
        return True
    choice = _choice_with_value(pred, gold)
    if choice is not None:
        return choice
    if is_text_answer(pred) or is_text_answer(gold):
        return _text_key(pred) == _text_key(gold)
    pred_num, gold_num = parse_number(pred), parse_number(gold)
    if pred_num is not None and gold_num is not None:
        if gold_num[1] and gold_num[0].denominator == 1:  # an integer gold: "204.0" yes, "204.01" no
            return pred_num[0] == gold_num[0]
        return numbers_close(pred_num, gold_num)
    return None


@lru_cache(maxsize=65536)
def _equivalent(prediction: str, gold: str) -> bool:
    pred, ref = normalize_answer(prediction), normalize_answer(gold)
    fast = _fast_decision(pred, ref)
    if fast is not None:
        return fast
    if _set_vs_tuple(pred, ref):
        return False
    try:
        return _symbolic_equivalent(pred, ref, parse_number(pred), parse_number(ref))
    except Exception:
        logging.getLogger(__name__).debug("grading failed for %r vs %r", prediction, gold, exc_info=True)
        return False


def is_equivalent(prediction: str | None, gold: str | None) -> bool:
    """Whether the predicted answer equals the gold answer (prediction first, gold second), in this
    process and without a time limit; :class:`~.worker.GradingWorker` grades with a hard per-call timeout."""
    if prediction is None or gold is None:
        return False
    return _equivalent(prediction, gold)
