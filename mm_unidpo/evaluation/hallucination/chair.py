"""CHAIR (Rohrbach et al., EMNLP 2018, arXiv 1809.02156) and AMBER generative (Wang et al., arXiv
2311.07397) from captions, ground-truth objects and an :class:`~.objects.ObjectMatcher`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .objects import ObjectMatcher
from .pope import ratio


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


def chair_scores(
    captions: Sequence[str],
    ground_truth: Sequence[Iterable[str]],
    matcher: ObjectMatcher,
    *,
    count_repeats: bool = False,
) -> ChairScores:
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
        per_caption.append(
            {
                "mentioned": distinct,
                "hallucinated": list(dict.fromkeys(wrong)),
                "ground_truth": sorted(gt),
                "covered": sorted(hit),
            }
        )
    n = len(captions)
    return ChairScores(
        n=n,
        chair_s=ratio(bad_captions, n),
        chair_i=ratio(hallucinated, mentioned),
        recall=ratio(covered, total_gt),
        hallucinated_captions=bad_captions,
        mentioned=mentioned,
        hallucinated=hallucinated,
        covered=covered,
        ground_truth=total_gt,
        per_caption=per_caption,
    )


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


def amber_scores(
    responses: Sequence[str],
    truth: Sequence[Iterable[str]],
    hallu: Sequence[Iterable[str]],
    matcher: ObjectMatcher,
    *,
    safe: Iterable[str] = (),
) -> AmberScores:
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
    return AmberScores(
        n=n,
        chair=ratio(wrong_total, mentioned),
        cover=ratio(covered, n_truth),
        hal=ratio(bad, n),
        cog=ratio(hit_hallu, n_hallu),
    )
