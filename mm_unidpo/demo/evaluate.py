"""Held-out evaluation: POPE (random / popular / adversarial) and CHAIR captioning.

The metric functions are :mod:`mm_unidpo.evaluation.hallucination`'s (`pope_scores`, `chair_scores`),
the ones the lmms-eval tasks use; generation is our own batched greedy decoding (see
:mod:`.generation`), which is what the lmms-eval plugin does per request, without lmms-eval's start-up.

POPE questions follow the paper's construction on the demo's held-out scenes: per image up to two
present objects (label yes) and as many absent ones (label no), the absent ones drawn uniformly
(random), from the most frequent objects of the training scenes (popular), or from the objects that
co-occur most with the ones present (adversarial). Held-out scenes are never used to tune anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from mm_unidpo.evaluation.hallucination import chair_scores, pope_scores

from .generation import generate
from .judge import MATCHER, caption_score
from .world import CAPTION_PROMPT, OBJECTS, PARTNER, QUESTION, Scene, cooccurrence, frequency

SPLITS = ("random", "popular", "adversarial")
POPE_KEYS = ("accuracy", "precision", "recall", "f1", "yes_ratio")
CHAIR_KEYS = ("chair_s", "chair_i", "recall")


@dataclass(frozen=True)
class Question:
    scene: int  # index into the held-out scenes
    object: str
    label: str  # "yes" | "no"


def pope_questions(scenes: list[Scene], train_scenes: list[Scene], seed: int) -> dict[str, list[Question]]:
    """Balanced POPE questions per split; statistics (frequency, co-occurrence) from `train_scenes`."""
    rng = np.random.default_rng(seed)
    freq = frequency(train_scenes)
    cooc = cooccurrence(train_scenes)
    out: dict[str, list[Question]] = {split: [] for split in SPLITS}
    for k, scene in enumerate(scenes):
        present = scene.objects
        absent = [o for o in OBJECTS if o not in present]
        n = min(2, len(present), len(absent))
        positives = [str(o) for o in rng.choice(present, size=n, replace=False)]
        by_freq = sorted(absent, key=lambda o: (-freq[o], o))
        by_cooc = sorted(absent, key=lambda o: (-sum(cooc[p][o] for p in present), o))
        negatives = {"random": [str(o) for o in rng.choice(absent, size=n, replace=False)],
                     "popular": by_freq[:n], "adversarial": by_cooc[:n]}
        for split in SPLITS:
            out[split] += [Question(k, o, "yes") for o in positives]
            out[split] += [Question(k, o, "no") for o in negatives[split]]
    return out


def evaluate_model(model: Any, processor: Any, scenes: list[Scene], questions: dict[str, list[Question]], *,
                   batch_size: int = 64, name: str = "model") -> dict[str, Any]:
    """POPE per split and averaged over the splits, CHAIR on greedy captions, and example captions."""
    unique = sorted({(q.scene, q.object) for split in SPLITS for q in questions[split]})
    answers = generate(model, processor, [QUESTION.format(o) for _, o in unique], [scenes[k].image for k, _ in unique],
                       max_new_tokens=4, batch_size=batch_size, desc=f"{name}: POPE")
    answer_of = {key: a[0] for key, a in zip(unique, answers)}
    splits = {}
    for split in SPLITS:
        scores = pope_scores([answer_of[(q.scene, q.object)] for q in questions[split]],
                             [q.label for q in questions[split]])
        splits[split] = {k: _finite(getattr(scores, k)) for k in (*POPE_KEYS, "ambiguous_ratio")}
        splits[split]["n"] = scores.n
    pope = {k: _mean([splits[s][k] for s in SPLITS]) for k in (*POPE_KEYS, "ambiguous_ratio")}

    captions = [c[0] for c in generate(model, processor, [CAPTION_PROMPT] * len(scenes), [s.image for s in scenes],
                                       max_new_tokens=32, batch_size=batch_size, desc=f"{name}: captions")]
    chair = chair_scores(captions, [s.objects for s in scenes], MATCHER)
    # How many hallucinated objects are the companion of an object that is there: the text prior at work.
    hallucinated = [(o, s) for c, s in zip(chair.per_caption, scenes) for o in c["hallucinated"]]
    companions = sum(PARTNER[o] in s.objects for o, s in hallucinated)
    judge = [caption_score(c, [(t.colour, t.name) for t in s.things]) for c, s in zip(captions, scenes)]
    return {
        "pope": pope,
        "pope_splits": splits,
        "chair": {"chair_s": _finite(chair.chair_s), "chair_i": _finite(chair.chair_i),
                  "recall": _finite(chair.recall), "n": chair.n, "mentioned": chair.mentioned,
                  "hallucinated": chair.hallucinated,
                  "companion_share": companions / len(hallucinated) if hallucinated else None},
        "judge_caption_score": float(np.mean(judge)) if judge else 0.0,
        "captions": captions,
    }


def _finite(value: float | None) -> float | None:
    """NaN (an undefined ratio, e.g. precision with no "yes" at all) becomes None: JSON null."""
    return None if value is None or math.isnan(value) else float(value)


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known else None
