"""POPE (Li et al., EMNLP 2023, arXiv 2305.10355): yes/no answers normalised (:mod:`.yes_no`), then
accuracy, precision, recall, F1, the yes-ratio of the predictions and the share of ambiguous answers (see
the package doc)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .yes_no import normalize_yes_no


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


def pope_scores(
    predictions: Sequence[str | None],
    labels: Sequence[Any],
    *,
    questions: Sequence[str | None] | None = None,
    normalize: bool = True,
    keep_ambiguous: int = 20,
) -> PopeScores:
    """POPE metrics of free-form ``predictions`` against yes/no ``labels`` (same order).

    ``questions`` (same order) lets each answer be read about the object its question asks for
    (:func:`~.yes_no.normalize_yes_no`); give them whenever you have them. With ``normalize=False`` the
    predictions must already be ``"yes"``, ``"no"`` or ``None``.
    """
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions but {len(labels)} labels")
    if questions is not None and len(questions) != len(labels):
        raise ValueError(f"{len(questions)} questions but {len(labels)} labels")
    tp = fp = tn = fn = amb = 0
    ambiguous_answers: list[str] = []
    for k, (raw, label) in enumerate(zip(predictions, labels)):
        question = questions[k] if questions is not None else None
        pred = normalize_yes_no(raw, question) if normalize else raw
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
    return PopeScores(
        n=n,
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
        ambiguous=amb,
        accuracy=ratio(tp + tn, n),
        precision=precision,
        recall=recall,
        f1=f1,
        yes_ratio=ratio(tp + fp, n),
        ambiguous_ratio=ratio(amb, n),
        ambiguous_answers=ambiguous_answers,
    )


def ratio(num: float, den: float) -> float:
    """num / den, NaN when undefined (no denominator)."""
    return num / den if den else math.nan
