"""Object-hallucination metrics: POPE, CHAIR and AMBER (generative), as pure functions.

    from mm_unidpo.evaluation.hallucination import normalize_yes_no, pope_scores, ObjectMatcher, chair_scores

    pope_scores(["Yes.", "There is no dog.", "maybe"], ["yes", "no", "yes"])
    matcher = ObjectMatcher.coco()                       # or ObjectMatcher.from_file("synonyms.txt")
    chair_scores(["A dog on a dining table."], [["dog", "chair"]], matcher)

Nothing here imports torch, transformers or lmms-eval; every function takes and returns plain Python
values, so the lmms-eval task hooks in ``eval/utils.py`` and the unit tests call the same code.

**POPE** (Li et al., EMNLP 2023, arXiv 2305.10355). Free-form answers are normalised to ``"yes"``,
``"no"`` or ``None`` (ambiguous) by :func:`normalize_yes_no`; an ambiguous answer is never credited:
it is neither a positive nor a negative prediction, counts as wrong in the accuracy and as a miss in
the recall, and is reported (``ambiguous``, ``ambiguous_ratio``). ``yes_ratio`` is the share of
*predictions* that are "yes" (a model biased towards "yes" shows it here); lmms-eval's own POPE task
reports the share of "yes" *labels* instead and scores by exact string match.

**CHAIR** (Rohrbach et al., EMNLP 2018, arXiv 1809.02156). Objects are found in a caption with a
synonym table (canonical object -> synonyms, one line ``object, synonym, synonym`` per object, the
format of the original CHAIR ``synonyms.txt``): matching is on word boundaries, case-insensitive, on
singular and plural forms, multi-word synonyms included, longest match first ("hot dog" is a hot dog,
never a dog; "dining table" is one object, not a table). ``chair_s`` (share of captions with at least
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

import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .coco_synonyms import COCO_SYNONYMS

__all__ = [
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
    "pope_scores",
]

# Direction of every metric this module reports (True: higher is better).
HIGHER_IS_BETTER: dict[str, bool] = {
    "pope_accuracy": True, "pope_precision": True, "pope_recall": True, "pope_f1": True,
    "pope_yes_ratio": True,  # no better direction: 0.5 on balanced POPE splits; kept True for lmms-eval
    "pope_ambiguous_ratio": False,
    "chair_s": False, "chair_i": False, "chair_recall": True,
    "amber_chair": False, "amber_cover": True, "amber_hal": False, "amber_cog": False,
}

# --------------------------------------------------------------------------------------------------
# POPE
# --------------------------------------------------------------------------------------------------

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


def _ratio(num: float, den: float) -> float:
    return num / den if den else math.nan


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
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, positives)
    if math.isnan(precision) or math.isnan(recall):
        f1 = math.nan
    else:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return PopeScores(n=n, tp=tp, fp=fp, tn=tn, fn=fn, ambiguous=amb, accuracy=_ratio(tp + tn, n),
                      precision=precision, recall=recall, f1=f1, yes_ratio=_ratio(tp + fp, n),
                      ambiguous_ratio=_ratio(amb, n), ambiguous_answers=ambiguous_answers)


# --------------------------------------------------------------------------------------------------
# Object matching (CHAIR, AMBER)
# --------------------------------------------------------------------------------------------------

_IRREGULAR_PLURALS = {
    "man": "men", "woman": "women", "child": "children", "person": "people", "mouse": "mice", "foot": "feet",
    "tooth": "teeth", "goose": "geese", "ox": "oxen", "knife": "knives", "leaf": "leaves", "shelf": "shelves",
    "wolf": "wolves", "loaf": "loaves", "calf": "calves", "half": "halves", "wife": "wives", "life": "lives",
    "scarf": "scarves", "thief": "thieves", "hoof": "hooves", "elf": "elves",
    "cactus": "cacti", "fungus": "fungi", "die": "dice", "potato": "potatoes", "tomato": "tomatoes",
    "hero": "heroes", "volcano": "volcanoes", "mango": "mangoes",
}
_INVARIANT_PLURALS = {"sheep", "deer", "fish", "moose", "bison", "aircraft", "people", "series", "species",
                      "glasses", "scissors", "skis", "jeans", "pants", "shorts", "trousers", "broccoli",
                      "police", "cattle", "luggage", "furniture", "equipment", "food", "meat", "corn"}


def pluralize(word: str) -> str:
    """The English plural of one (lower-case) noun; the last word of a phrase is pluralised."""
    head, sep, last = word.rpartition(" ")
    if last in _INVARIANT_PLURALS:
        plural = last
    elif last in _IRREGULAR_PLURALS:
        plural = _IRREGULAR_PLURALS[last]
    elif last.endswith("man") and len(last) > 3:  # policeman, fireman, snowman
        plural = last[:-3] + "men"
    elif re.search(r"(s|x|z|ch|sh)$", last):
        plural = last + "es"
    elif re.search(r"[^aeiou]y$", last):
        plural = last[:-1] + "ies"
    else:
        plural = last + "s"
    return head + sep + plural


def _tokens(text: str) -> list[str]:
    # Hyphens and slashes separate words ("hot-dog" is "hot dog"); apostrophes do not ("dog's" -> "dog s").
    return re.findall(r"[a-z0-9]+", text.lower().replace("’", "'"))


class ObjectMatcher:
    """Finds the objects a text mentions, from a synonym table {object: [synonyms]}.

    Every synonym (and the object's own name) is matched in its singular and plural form on word
    boundaries; at each position the longest synonym wins and its words are consumed, so "hot dog"
    never also counts as "dog" and "dining table" never also as "table". A synonym claimed by two
    objects is an error (the table would be ambiguous).
    """

    def __init__(self, synonyms: Mapping[str, Iterable[str]]):
        self.objects: tuple[str, ...] = tuple(sorted(_norm(o) for o in synonyms))
        self._phrases: dict[tuple[str, ...], str] = {}
        for obj, words in synonyms.items():
            canonical = _norm(obj)
            for phrase in {canonical, *(_norm(w) for w in words)}:
                if not phrase:
                    continue
                for form in {phrase, pluralize(phrase)}:
                    key = tuple(form.split())
                    owner = self._phrases.get(key)
                    if owner is not None and owner != canonical:
                        raise ValueError(f"synonym {form!r} belongs to both {owner!r} and {canonical!r}")
                    self._phrases[key] = canonical
        self._longest = max((len(k) for k in self._phrases), default=0)

    @classmethod
    def from_lines(cls, lines: Iterable[str]) -> "ObjectMatcher":
        """The original CHAIR ``synonyms.txt`` format: ``object, synonym, synonym`` per line;
        blank lines and ``#`` comments are skipped."""
        table: dict[str, list[str]] = {}
        for line in lines:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            names = [w.strip() for w in line.split(",") if w.strip()]
            table.setdefault(names[0], []).extend(names[1:])
        return cls(table)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "ObjectMatcher":
        with open(path, encoding="utf-8") as f:
            return cls.from_lines(f)

    @classmethod
    def coco(cls) -> "ObjectMatcher":
        """The 80 COCO categories with common synonyms (:data:`COCO_SYNONYMS`, written for this
        project). For numbers comparable with published CHAIR results, load the original table instead:
        ``ObjectMatcher.from_file("synonyms.txt")`` (github.com/LisaAnne/Hallucination, data/)."""
        return cls(COCO_SYNONYMS)

    def canonical(self, name: str) -> str | None:
        """The object a single name (e.g. a ground-truth label "Dining tables") stands for, or None."""
        return self._phrases.get(tuple(_tokens(name)))

    def mentions(self, text: str) -> list[tuple[str, str]]:
        """(object, matched words) for every mention, in order of appearance."""
        tokens = _tokens(text)
        found: list[tuple[str, str]] = []
        i = 0
        while i < len(tokens):
            for size in range(min(self._longest, len(tokens) - i), 0, -1):
                key = tuple(tokens[i:i + size])
                if key in self._phrases:
                    found.append((self._phrases[key], " ".join(key)))
                    i += size
                    break
            else:
                i += 1
        return found

    def objects_in(self, text: str) -> list[str]:
        """The distinct objects a text mentions, in order of first mention."""
        return list(dict.fromkeys(obj for obj, _ in self.mentions(text)))

    def ground_truth(self, names: Iterable[str]) -> set[str]:
        """Ground-truth object names mapped to canonical objects; a name that is not in the table
        (e.g. a free-form annotation) is matched as text, and kept as given if nothing matches."""
        out: set[str] = set()
        for name in names:
            obj = self.canonical(name)
            if obj is not None:
                out.add(obj)
                continue
            found = self.objects_in(name)
            out.update(found if found else [_norm(name)])
        return out


def _norm(phrase: str) -> str:
    return " ".join(_tokens(phrase))


# --------------------------------------------------------------------------------------------------
# CHAIR
# --------------------------------------------------------------------------------------------------


@dataclass
class ChairScores:
    """CHAIR over ``n`` captions. Lower ``chair_s`` / ``chair_i`` is better; higher ``recall`` is better."""

    n: int
    chair_s: float  # captions with >= 1 hallucinated object / captions
    chair_i: float  # hallucinated objects / mentioned objects (NaN if no caption mentions any)
    recall: float  # ground-truth objects mentioned / ground-truth objects
    hallucinated_captions: int
    mentioned: int
    hallucinated: int
    covered: int
    ground_truth: int
    per_caption: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self, per_caption: bool = False) -> dict[str, Any]:
        out = asdict(self)
        if not per_caption:
            out.pop("per_caption")
        return out


def chair_scores(captions: Sequence[str], ground_truth: Sequence[Iterable[str]], matcher: ObjectMatcher, *,
                 count_repeats: bool = False) -> ChairScores:
    """CHAIR_s, CHAIR_i and object recall of ``captions`` against per-caption ground-truth objects.

    ``ground_truth[k]`` lists the objects really in image k (names or synonyms; mapped through the
    table). ``count_repeats=True`` counts every mention ("a dog and another dog" = 2 mentions) for
    CHAIR_i, as the original CHAIR code does; the default counts each object once per caption.
    """
    if len(captions) != len(ground_truth):
        raise ValueError(f"{len(captions)} captions but {len(ground_truth)} ground-truth lists")
    mentioned = hallucinated = covered = total_gt = bad_captions = 0
    per_caption = []
    for caption, gt_names in zip(captions, ground_truth):
        gt = matcher.ground_truth(gt_names)
        mentions = [obj for obj, _ in matcher.mentions(caption or "")]
        distinct = list(dict.fromkeys(mentions))
        counted = mentions if count_repeats else distinct
        wrong = [obj for obj in counted if obj not in gt]
        mentioned += len(counted)
        hallucinated += len(wrong)
        bad_captions += bool(wrong)
        hit = {obj for obj in distinct if obj in gt}
        covered += len(hit)
        total_gt += len(gt)
        per_caption.append({"mentioned": distinct, "hallucinated": list(dict.fromkeys(wrong)),
                            "ground_truth": sorted(gt), "covered": sorted(hit)})
    n = len(captions)
    return ChairScores(n=n, chair_s=_ratio(bad_captions, n), chair_i=_ratio(hallucinated, mentioned),
                       recall=_ratio(covered, total_gt), hallucinated_captions=bad_captions, mentioned=mentioned,
                       hallucinated=hallucinated, covered=covered, ground_truth=total_gt, per_caption=per_caption)


def coco_ground_truth(matcher: ObjectMatcher, instances: Mapping[str, Any] | None = None,
                      captions: Mapping[str, Any] | None = None) -> dict[int, set[str]]:
    """image id -> ground-truth objects from COCO annotation files (already ``json.load``-ed), the way
    CHAIR builds them: the category names of the instance (segmentation) annotations, plus the objects
    the human reference captions mention."""
    out: dict[int, set[str]] = {}
    if instances is not None:
        names = {c["id"]: c["name"] for c in instances.get("categories", [])}
        for ann in instances.get("annotations", []):
            obj = matcher.canonical(names[ann["category_id"]])
            if obj is not None:
                out.setdefault(ann["image_id"], set()).add(obj)
    if captions is not None:
        for ann in captions.get("annotations", []):
            out.setdefault(ann["image_id"], set()).update(matcher.objects_in(ann["caption"]))
    return out


# --------------------------------------------------------------------------------------------------
# AMBER (generative)
# --------------------------------------------------------------------------------------------------


@dataclass
class AmberScores:
    """AMBER generative metrics, in [0, 1]. ``chair`` lower is better, ``cover`` higher is better,
    ``hal`` lower is better, ``cog`` **lower is better**."""

    n: int
    chair: float  # hallucinated objects / mentioned objects
    cover: float  # ground-truth ("truth") objects mentioned / ground-truth objects
    hal: float  # responses with >= 1 hallucinated object / responses
    cog: float  # hallucination-prone ("hallu") objects mentioned / hallucination-prone objects; LOWER is better

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def amber_scores(responses: Sequence[str], truth: Sequence[Iterable[str]], hallu: Sequence[Iterable[str]],
                 matcher: ObjectMatcher, *, safe: Iterable[str] = ()) -> AmberScores:
    """AMBER-style generative metrics. ``truth[k]``: objects in image k; ``hallu[k]``: objects a model
    tends to hallucinate for image k (AMBER's annotations); ``safe``: objects never counted as
    hallucinations (AMBER's ``safe_words``). The matcher's table is the object vocabulary: only objects
    in it are counted (AMBER restricts to its own object list too)."""
    if not (len(responses) == len(truth) == len(hallu)):
        raise ValueError(f"{len(responses)} responses, {len(truth)} truth lists and {len(hallu)} hallu lists")
    safe_objects = matcher.ground_truth(safe)
    mentioned = wrong_total = covered = n_truth = hit_hallu = n_hallu = bad = 0
    for response, truth_names, hallu_names in zip(responses, truth, hallu):
        gt, prone = matcher.ground_truth(truth_names), matcher.ground_truth(hallu_names)
        objects = [o for o in matcher.objects_in(response or "") if o not in safe_objects]
        wrong = [o for o in objects if o not in gt]
        mentioned += len(objects)
        wrong_total += len(wrong)
        bad += bool(wrong)
        covered += len(gt & set(objects))
        n_truth += len(gt)
        hit_hallu += len(prone & set(objects))
        n_hallu += len(prone)
    n = len(responses)
    return AmberScores(n=n, chair=_ratio(wrong_total, mentioned), cover=_ratio(covered, n_truth),
                       hal=_ratio(bad, n), cog=_ratio(hit_hallu, n_hallu))
