"""Object-hallucination metrics: POPE, CHAIR and AMBER (generative), as pure functions.

    from mm_unidpo.evaluation.hallucination import normalize_yes_no, pope_scores, ObjectMatcher, chair_scores

    pope_scores(["Yes.", "There is a dog, but no cat.", "maybe"], ["yes", "yes", "no"],
                questions=["Is there a dog in the image?"] * 3)
    matcher = ObjectMatcher.coco()                       # or ObjectMatcher.from_file("synonyms.txt")
    chair_scores(["A dog on a dining table."], [["dog", "chair"]], matcher)

Nothing here imports torch, transformers or lmms-eval; every function takes and returns plain Python
values, so the lmms-eval task hooks in ``eval/utils.py`` and the unit tests call the same code.

**POPE** (Li et al., EMNLP 2023, arXiv 2305.10355). Free-form answers are normalised to ``"yes"``,
``"no"`` or ``None`` (ambiguous) by :func:`normalize_yes_no` (:mod:`.yes_no`), about the object the
question asks for when it is given ("There is a dog, but no cat." is yes to "Is there a dog ...?"); hedges
and answers about other objects only are ambiguous. An ambiguous answer is never credited:
it is neither a positive nor a negative prediction, counts as wrong in the accuracy and as a miss in
the recall, and is reported (``ambiguous``, ``ambiguous_ratio``). ``yes_ratio`` is the share of
*predictions* that are "yes" (a model biased towards "yes" shows it here); lmms-eval's own POPE task
reports the share of "yes" *labels* instead and scores by exact string match.

**CHAIR** (Rohrbach et al., EMNLP 2018, arXiv 1809.02156). Objects are found in a caption with a
synonym table (canonical object -> synonyms, one line ``object, synonym, synonym`` per object, the
format of the original CHAIR ``synonyms.txt``): matching is on word boundaries, case-insensitive, on
singular and plural forms, multi-word synonyms included, longest match first ("hot dog" is a hot dog,
never a dog; "dining table" is one object, not a table), with the original CHAIR's special rules
(:data:`CHAIR_RULES`: "baby elephant" is no person, "train tracks" no train, "toilet seat" no chair).
``chair_s`` (share of captions with at least
one hallucinated object), ``chair_i`` (hallucinated objects / mentioned objects) and ``recall``
(ground-truth objects mentioned / ground-truth objects). All three use the *distinct* objects of each
caption, the paper's definition; ``count_repeats=True`` counts every mention as the original code does.
Lower CHAIR is better; higher recall is better.

**AMBER** generative (Wang et al., arXiv 2311.07397): ``chair`` (lower is better), ``cover`` (higher is
better), ``hal`` (lower is better) and ``cog`` -- the share of the annotated hallucination-prone
objects ("hallu") that the response mentions: **lower is better** (lmms-eval's ``amber_g`` task marks
it higher-is-better, which is wrong). Objects are matched with the same synonym matcher, not with
AMBER's spaCy noun extraction and WordNet similarity, so the numbers are close to, not identical with,
the official AMBER script; use that script for numbers to publish.

The directions of every metric are in :data:`HIGHER_IS_BETTER`.
"""

from __future__ import annotations

from .chair import AmberScores, ChairScores, amber_scores, chair_scores
from .coco_synonyms import CHAIR_RULES
from .objects import ObjectMatcher, coco_ground_truth, pluralize
from .pope import PopeScores, pope_scores
from .yes_no import normalize_yes_no, pope_object

__all__ = [
    "CHAIR_RULES",
    "HIGHER_IS_BETTER",
    "AmberScores",
    "ChairScores",
    "ObjectMatcher",
    "PopeScores",
    "amber_scores",
    "chair_scores",
    "coco_ground_truth",
    "normalize_yes_no",
    "pluralize",
    "pope_object",
    "pope_scores",
]

# Direction of every metric this package reports (True: higher is better).
HIGHER_IS_BETTER: dict[str, bool] = {
    "pope_accuracy": True,
    "pope_precision": True,
    "pope_recall": True,
    "pope_f1": True,
    "pope_yes_ratio": True,  # no better direction: 0.5 on balanced POPE splits; kept True for lmms-eval
    "pope_ambiguous_ratio": False,
    "chair_s": False,
    "chair_i": False,
    "chair_recall": True,
    "amber_chair": False,
    "amber_cover": True,
    "amber_hal": False,
    "amber_cog": False,
}
