"""Final-answer extraction from model completions and reference solutions.

Order of preference (the first that finds something wins):

1. the last non-empty ``\\boxed{...}`` / ``\\fbox{...}`` (brace matched, escaped ``\\{ \\}`` ignored),
   or the short form ``\\boxed 5``;
2. GSM8K only: the last ``#### N`` line (the reference format of GSM8K solutions);
3. the last "final answer is ..." / "the answer is ..." phrase that states an answer (what the few-shot
   template asks for), markdown emphasis removed; a verdict ("I am sure the answer is correct") is skipped;
4. the last number in the text.

For the integer-answer benchmarks (GSM8K, AIME, AMC) a candidate that is a sentence or carries units
("18 dollars", "$18 per day") is reduced to its last number, since the reference is a bare integer.
"""

from __future__ import annotations

import re

from .grade import normalize_answer
from .numeric import parse_number

BENCHMARKS = ("gsm8k", "math500", "aime24", "amc23", "minerva_math")
# Benchmarks whose references are plain numbers: a wordy candidate is reduced to its last number.
NUMERIC_BENCHMARKS = frozenset({"gsm8k", "aime24", "amc23"})

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
# "\boxed 5" (no braces): the token up to whitespace or a math delimiter.
_BOX_BARE_RE = re.compile(r"\s+([^\s$]+)")
_HASH_RE = re.compile(r"####\s*([^\n]*)")
_ANSWER_IS_RE = re.compile(r"(?:final answer|the answer)\s*(?:is|:)\s*:?\s*", re.IGNORECASE)
# "... the answer is correct / right / as follows": a verdict on the answer, not one.
_VERDICT_RE = re.compile(
    r"(?:(?:indeed|definitely|probably|likely|also|not|still)\s+)?(?:correct|right|wrong|"
    r"incorrect|reasonable|valid|consistent|confirmed|verified|accurate|plausible|sound|"
    r"as follows|below|above|the following|clear|obvious)\b.*",
    re.IGNORECASE | re.DOTALL,
)
# A number, optionally with thousands separators, decimals or a sign; a '-' directly after a word
# character or closing bracket is subtraction ("16-3"), not a sign.
NUMBER_RE = re.compile(r"(?:(?<![\w)\]}])-)?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)")


def _match_braces(text: str, start: int) -> int | None:
    """Index just past the brace group opening at ``text[start] == '{'``; None if unbalanced."""
    depth, i = 0, start
    while i < len(text):
        ch = text[i]
        if ch == "\\":  # skip the escaped character: \{ and \} are literal braces in LaTeX
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


def find_boxed(text: str) -> list[str]:
    """Contents of every complete ``\\boxed{}`` / ``\\fbox{}`` (and ``\\boxed 5``), in order, empty ones dropped.

    Empty boxes are dropped because models often echo the instruction "within \\boxed{}".
    """
    found: list[str] = []
    for m in _BOX_RE.finditer(text):
        i = m.end()
        rest = text[i:]
        stripped = rest.lstrip(" ")
        if stripped.startswith("{"):
            start = i + len(rest) - len(stripped)
            end = _match_braces(text, start)
            if end is None:  # truncated generation: the box never closes
                continue
            content = text[start + 1 : end - 1].strip()
        else:
            bare = _BOX_BARE_RE.match(rest)
            if not bare:
                continue
            content = bare.group(1).rstrip(".,;")
        if content:
            found.append(content)
    return found


def last_boxed(text: str) -> str | None:
    """The last non-empty boxed answer, or None."""
    boxes = find_boxed(text)
    return boxes[-1] if boxes else None


def _answer_phrase(text: str) -> str | None:
    """What follows the last "the answer is" / "final answer is" that states an answer: a $...$ span or the
    rest of the sentence, markdown emphasis removed ("**5**" -> "5"). A phrase that judges the answer instead
    ("... the answer is correct", "the answer is as follows") is skipped."""
    for match in reversed(list(_ANSWER_IS_RE.finditer(text))):
        phrase = _phrase_after(text[match.end() :])
        if phrase is not None and not _VERDICT_RE.fullmatch(phrase):
            return phrase
    return None


def _phrase_after(rest: str) -> str | None:
    rest = rest.lstrip().lstrip("*_`").lstrip()  # markdown emphasis: "**5**", "`5`"
    for open_, close in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if rest.startswith(open_):
            end = rest.find(close, len(open_))
            if end > 0:
                return rest[len(open_) : end].strip() or None
    # The sentence ends at a newline or at a full stop followed by space/end (not a decimal point).
    sentence = re.split(r"\n|\.(?=\s|$)", rest, maxsplit=1)[0]
    return sentence.strip().strip("*`").strip().strip("$").strip() or None


def last_number(text: str) -> str | None:
    """The last number in the text (thousands separators kept, the grader removes them)."""
    numbers = NUMBER_RE.findall(text)
    return numbers[-1] if numbers else None


def _reduce_to_number(candidate: str) -> str:
    """For integer-answer benchmarks: "18 dollars" / "\\$18.00" -> "18" / "18.00"; fractions are kept."""
    normalized = normalize_answer(candidate)
    if parse_number(normalized) is not None:
        return normalized
    if "frac" in candidate or "/" in candidate:
        return candidate
    return last_number(candidate) or candidate


def extract_answer(text: str, benchmark: str) -> str | None:
    """The final answer in a completion or reference solution, as a string; None if nothing is found.

    ``benchmark`` is one of :data:`BENCHMARKS`; it selects the GSM8K ``####`` rule and whether a wordy
    candidate is reduced to its last number.
    """
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r}; expected one of {BENCHMARKS}")
    if not text:
        return None
    candidate = last_boxed(text)
    if candidate is None and benchmark == "gsm8k":
        hashes = [h.strip() for h in _HASH_RE.findall(text) if h.strip()]
        candidate = hashes[-1] if hashes else None
    if candidate is None:
        candidate = _answer_phrase(text)
    if candidate is None:
        candidate = last_number(text)
    if candidate is None:
        return None
    candidate = candidate.strip().rstrip(".").strip()
    if benchmark in NUMERIC_BENCHMARKS:
        candidate = _reduce_to_number(candidate)
    return candidate or None
