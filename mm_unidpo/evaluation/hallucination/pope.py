"""POPE (Li et al., EMNLP 2023, arXiv 2305.10355): yes/no answers normalised, then accuracy, precision,
recall, F1, the yes-ratio of the predictions and the share of ambiguous answers (see the package doc)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

_YES_WORDS = {"yes", "yeah", "yep", "yup", "yea", "correct", "true", "affirmative", "certainly", "definitely"}
_NO_WORDS = {"no", "nope", "nah", "not", "false", "incorrect", "negative"}
_NEGATIONS = {"no", "not", "none", "nothing", "neither", "nor", "never", "without", "cannot", "nobody", "nowhere"}
_HEDGES = ("not sure", "unsure", "uncertain", "unclear", "not certain", "cannot tell", "cannot determine",
           "cannot be determined", "difficult to determine", "hard to tell", "hard to say", "do not know",
           "maybe", "perhaps", "possibly", "might", "may be", "it is possible", "impossible to tell")
_AFFIRMATIVE = re.compile(
    r"^(there (is|are|appears? to be|seems? to be)|i (can )?see|it is|this is|these are|the image "
    r"(shows|contains|has|depicts|features|includes))\b")
_CONTRACTIONS = (("can't", "cannot"), ("won't", "will not"), ("n't", " not"), ("there's", "there is"),
                 ("it's", "it is"), ("i'm", "i am"), ("that's", "that is"))


def _words(text: str) -> list[str]:
    text = text.lower().replace("’", "'")
    for short, long in _CONTRACTIONS:
        text = text.replace(short, long)
    return re.findall(r"[a-z0-9]+", text)


def normalize_yes_no(answer: str | None) -> str | None:
    """``"yes"``, ``"no"``, or ``None`` for an answer that is neither (empty, hedged, off-topic).

    In order: an answer that *starts* with a yes-word ("Yes.", "yes, there is a dog", "Correct") is
    yes, one that starts with a no-word ("No", "nope", "False") is no; a hedge anywhere ("Not sure",
    "I don't know", "maybe", "it might be") makes it ambiguous; otherwise a negation anywhere ("There is no dog.", "I don't see
    a dog") makes it no; otherwise "yes" anywhere, or an affirmative statement ("There is a dog.",
    "The image shows a dog") makes it yes. Anything else ("dog", "The sky is blue") is ambiguous.
    """
    if answer is None:
        return None
    words = _words(str(answer))
    if not words:
        return None
    if words[0] in _YES_WORDS:
        return "yes"
    if words[0] in _NO_WORDS and words[0] != "not":  # "Not sure" is a hedge, "Not at all" a negation below
        return "no"
    joined = " ".join(words)
    if any(re.search(rf"\b{re.escape(h)}\b", joined) for h in _HEDGES):
        return None
    if any(w in _NEGATIONS for w in words):
        return "no"
    if "yes" in words or _AFFIRMATIVE.search(joined):
        return "yes"
    return None


def _label(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    label = str(value).strip().lower().rstrip(".")
    if label not in ("yes", "no"):
        raise ValueError(f"a POPE label must be 'yes' or 'no', got {value!r}")
    return label


@dataclass
class PopeScores:
    """POPE metrics over ``n`` answers. Ratios are in [0, 1]; undefined ones (0/0) are NaN."""

    n: int
    tp: int
    fp: int
    tn: int
    fn: int
    ambiguous: int  # answers normalised to neither yes nor no
    accuracy: float  # (tp + tn) / n: an ambiguous answer is wrong
    precision: float  # tp / (tp + fp)
    recall: float  # tp / (positive labels): an ambiguous answer to a "yes" question is a miss
    f1: float
    yes_ratio: float  # share of predictions that are "yes": (tp + fp) / n
    ambiguous_ratio: float  # ambiguous / n
    ambiguous_answers: list[str] = field(default_factory=list)  # the first few, for the report

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def pope_scores(predictions: Sequence[str | None], labels: Sequence[Any], *, normalize: bool = True,
                keep_ambiguous: int = 20) -> PopeScores:
    """POPE metrics of free-form ``predictions`` against yes/no ``labels`` (same order).

    With ``normalize=False`` the predictions must already be ``"yes"``, ``"no"`` or ``None``.
    """
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions but {len(labels)} labels")
    tp = fp = tn = fn = amb = 0
    ambiguous_answers: list[str] = []
    for raw, label in zip(predictions, labels):
        pred = normalize_yes_no(raw) if normalize else raw
        gold = _label(label)
        if pred is None:
            amb += 1
            if len(ambiguous_answers) < keep_ambiguous:
                ambiguous_answers.append("" if raw is None else str(raw))
        elif pred not in ("yes", "no"):
            raise ValueError(f"a normalised prediction must be 'yes', 'no' or None, got {pred!r}")
        elif pred == "yes":
            tp, fp = tp + (gold == "yes"), fp + (gold == "no")
        else:
            tn, fn = tn + (gold == "no"), fn + (gold == "yes")
    n = len(labels)
    positives = sum(_label(x) == "yes" for x in labels)
    precision, recall = ratio(tp, tp + fp), ratio(tp, positives)
    if math.isnan(precision) or math.isnan(recall):
        f1 = math.nan
    else:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return PopeScores(n=n, tp=tp, fp=fp, tn=tn, fn=fn, ambiguous=amb, accuracy=ratio(tp + tn, n),
                      precision=precision, recall=recall, f1=f1, yes_ratio=ratio(tp + fp, n),
                      ambiguous_ratio=ratio(amb, n), ambiguous_answers=ambiguous_answers)


def ratio(num: float, den: float) -> float:
    """num / den, NaN when undefined (no denominator)."""
    return num / den if den else math.nan
