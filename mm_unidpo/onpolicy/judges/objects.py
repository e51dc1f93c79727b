"""The object judge: a CHAIR-like 0-10 score of a caption against the image's ground-truth objects.

    mm-unidpo judge samples.jsonl --judge objects --out scored.jsonl                 # COCO objects, `objects` field
    mm-unidpo judge samples.jsonl --judge objects --judge-arg vocabulary=synonyms.txt \\
        --judge-arg colours=red,green,blue --out scored.jsonl

Ground truth: the prompt record's `objects` field (`--judge-arg field=...`), a list of names or of
"colour name" phrases (or one string, split at ";" and ","). Objects are found in the response with the
CHAIR matcher of :mod:`mm_unidpo.evaluation.hallucination` (synonyms, plurals, longest match first) over
`vocabulary`: "coco" (default), a CHAIR `synonyms.txt` / JSON {object: [synonyms]} file, or comma-separated names.

Score: the first mention of an object that is there earns 1 (`wrong_colour_credit`, 0.5, if the colour
word right before it names another colour than the ground truth's); a mention of an absent object, or a
repeated mention of one that is there (one of each: "a cross, a cross" is a count hallucination), is a
hallucination costing `hallucination_cost` (2: hallucination is worse than omission, as in CHAIR-driven
alignment). score = 10 × earned / (ground-truth objects + cost × hallucinations): 10 for a complete,
correct caption, 0 for an empty or fully wrong one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mm_unidpo.evaluation.hallucination import ObjectMatcher
from mm_unidpo.evaluation.hallucination.objects import tokens as split_words

from .base import Judge, Judgement

HALLUCINATION_COST = 2.0
WRONG_COLOUR_CREDIT = 0.5
Truth = list[tuple[str | None, str]]  # (colour or None, object)


def object_matcher(vocabulary: Any = "coco") -> Any:
    """An `ObjectMatcher` from "coco", a synonyms file (CHAIR .txt or JSON), comma-separated names, a list
    of names or a {object: [synonyms]} mapping."""
    if isinstance(vocabulary, Mapping):
        return ObjectMatcher(vocabulary)
    if isinstance(vocabulary, (list, tuple)):
        return ObjectMatcher({name: [] for name in vocabulary})
    if vocabulary == "coco":
        return ObjectMatcher.coco()
    path = Path(str(vocabulary))
    if path.is_file():
        if path.suffix == ".json":
            return object_matcher(json.loads(path.read_text(encoding="utf-8")))
        return ObjectMatcher.from_file(path)
    names = [n.strip() for n in str(vocabulary).split(",") if n.strip()]
    if len(names) < 2 and ("/" in str(vocabulary) or str(vocabulary).endswith((".txt", ".json"))):
        raise FileNotFoundError(f"vocabulary file {vocabulary!r} not found")
    return ObjectMatcher({name: [] for name in names})


def mentions_with_colour(text: str, matcher: Any, colours: Iterable[str]) -> list[tuple[str, str | None]]:
    """(object, the colour word right before its mention or None) for every mention, in order."""
    colours = set(colours)
    tokens, cursor, out = split_words(text), 0, []
    for name, words in matcher.mentions(text):
        size = len(words.split())
        while cursor < len(tokens) and tuple(tokens[cursor : cursor + size]) != tuple(words.split()):
            cursor += 1  # the matcher walks the same tokens: its next mention starts here or later
        before = tokens[cursor - 1] if cursor > 0 else None
        out.append((name, before if before in colours else None))
        cursor += size
    return out


def object_score(
    response: str,
    truth: Truth,
    matcher: Any,
    colours: Iterable[str] = (),
    *,
    hallucination_cost: float = HALLUCINATION_COST,
    wrong_colour_credit: float = WRONG_COLOUR_CREDIT,
) -> tuple[float, list[str]]:
    """(the 0-10 score of the module doc, the hallucinated mentions) of `response` against `truth`."""
    colours_of: dict[str, set[str | None]] = {}
    for colour, name in truth:
        colours_of.setdefault(name, set()).add(colour)
    earned, hallucinated, seen = 0.0, [], set()
    for name, colour in mentions_with_colour(response or "", matcher, colours):
        if name not in colours_of or name in seen:
            hallucinated.append(name)
        elif colour is None or None in colours_of[name] or colour in colours_of[name]:
            earned += 1.0
        else:
            earned += wrong_colour_credit
        seen.add(name)
    denominator = len(colours_of) + hallucination_cost * len(hallucinated)
    return (0.0 if denominator == 0 else 10.0 * earned / denominator), hallucinated


def parse_truth(value: Any, matcher: Any, colours: Iterable[str]) -> Truth:
    """Ground truth as (colour or None, canonical object) from names or "colour name" phrases."""
    colours = set(colours)
    if isinstance(value, str):
        value = [v for v in re.split(r"[;,]", value) if v.strip()]
    out = []
    for phrase in value:
        words = str(phrase).strip().lower().split()
        colour = words[0] if len(words) >= 2 and words[0] in colours else None
        name = " ".join(words[1:] if colour else words)
        out.append((colour, matcher.canonical(name) or name))
    return out


def objects_judge(
    vocabulary: Any = "coco",
    colours: Any = (),
    field: str = "objects",
    hallucination_cost: float = HALLUCINATION_COST,
    wrong_colour_credit: float = WRONG_COLOUR_CREDIT,
) -> Judge:
    """The object judge of the module doc; ground truth from each record's `field`."""
    matcher = object_matcher(vocabulary)
    colours = [c.strip() for c in colours.split(",")] if isinstance(colours, str) else list(colours)
    cost, credit = float(hallucination_cost), float(wrong_colour_credit)

    def judge(items: list[tuple[Any, str]]) -> list[Judgement]:
        out = []
        for record, response in items:
            value = record.meta.get(field) if hasattr(record, "meta") else getattr(record, field, None)
            if value is None:
                raise ValueError(f"{record.where()}: no ground-truth objects (field {field!r}) for the object judge")
            score, hallucinated = object_score(
                response,
                parse_truth(value, matcher, colours),
                matcher,
                colours,
                hallucination_cost=cost,
                wrong_colour_credit=credit,
            )
            out.append({"score": score, "hallucinated": hallucinated})
        return out

    return judge
