"""The demo's rule judge: a CHAIR-like score of a response against the scene's ground truth, 0-10.

    score_caption(record, "A red star and a yellow moon.")   # record: PreferenceRecord, dict or Scene
    score_yes_no(record, "No.")                               # the question is read from the prompt
    score_response(record, response)                          # either, by the prompt

Usable as `mm-unidpo score --scorer mm_unidpo.demo.judge:score_response` (any `(record, response) ->
float`). The ground truth is taken from, in order: a `objects` / `ground_truth` entry of a dict record
(a list of names or of "colour name" phrases), the attribute of that name, or the text chunk the demo
world writes into every scene PNG (so a saved demo data file needs no side file).

Caption score: every object mention is matched against the ground truth with the CHAIR matcher of
:mod:`mm_unidpo.evaluation.hallucination`. The first mention of an object that is there earns 1 (0.5
if its colour is wrong); a mention of an absent object, or a repeated mention (every scene has one of
each object, so "a cross, a cross" is a count hallucination) is a hallucination and costs 2
(hallucination is worse than omission, as in CHAIR-driven alignment). The score is
10 x earned / (ground-truth objects + 2 x hallucinations): 10 for a complete, correct caption, 0 for
an empty or fully wrong one.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from typing import Any

from PIL import Image

from mm_unidpo.evaluation.hallucination import ObjectMatcher, normalize_yes_no

from .world import COLOURS, OBJECTS, QUESTION, read_annotation

HALLUCINATION_COST = 2.0
WRONG_COLOUR_CREDIT = 0.5
MATCHER = ObjectMatcher({name: [] for name in OBJECTS})
_QUESTION = re.compile(r"(?P<object>[a-z ]+)".join(re.escape(part) for part in QUESTION.split("{}")), re.IGNORECASE)


def ground_truth(record: Any) -> list[tuple[str | None, str]]:
    """[(colour or None, object)] of the image a record is about."""
    value = None
    if isinstance(record, Mapping):
        value = record.get("objects", record.get("ground_truth"))
    else:
        value = getattr(record, "objects", None) or getattr(record, "ground_truth", None)
    if value is not None:
        if isinstance(value, str):
            value = [v for v in re.split(r"[;,]", value) if v.strip()]
        return [_split_phrase(str(v)) for v in value]
    images = record.get("images") if isinstance(record, Mapping) else getattr(record, "images", None)
    root = record.get("image_root") if isinstance(record, Mapping) else getattr(record, "image_root", None)
    for ref in images or []:
        found = read_annotation(_open(ref, root))
        if found is not None:
            return [(colour, name) for colour, name in found]
    raise ValueError("no ground truth: the record has no 'objects' and its image carries no demo annotation")


def _split_phrase(phrase: str) -> tuple[str | None, str]:
    words = phrase.strip().lower().split()
    if len(words) >= 2 and words[0] in COLOURS:
        return words[0], " ".join(words[1:])
    return None, " ".join(words)


def _open(ref: Any, root: str | None) -> Image.Image:
    from mm_unidpo.data.images import resolve_image_path

    if isinstance(ref, Image.Image):
        return ref
    if isinstance(ref, Mapping) and ref.get("bytes_b64") is not None:
        import base64

        ref = base64.b64decode(ref["bytes_b64"])
    if isinstance(ref, (bytes, bytearray)):
        return Image.open(io.BytesIO(ref))
    return Image.open(resolve_image_path(str(ref), root))


def caption_score(response: str, truth: list[tuple[str | None, str]]) -> float:
    """The 0-10 caption score (see module doc) of `response` against (colour, object) ground truth."""
    colours_of: dict[str, set[str | None]] = {}
    for colour, name in truth:
        colours_of.setdefault(name, set()).add(colour)
    earned, hallucinated, seen = 0.0, 0, set()
    for name, colour in _mentions(response or ""):
        if name not in colours_of or name in seen:
            hallucinated += 1
        elif colour is None or None in colours_of[name] or colour in colours_of[name]:
            earned += 1.0
        else:
            earned += WRONG_COLOUR_CREDIT
        seen.add(name)
    denominator = len(colours_of) + HALLUCINATION_COST * hallucinated
    return 0.0 if denominator == 0 else 10.0 * earned / denominator


def _mentions(text: str) -> list[tuple[str, str | None]]:
    """(object, the colour word right before it or None) for every object mention, in order."""
    tokens = re.findall(r"[a-z]+", text.lower())
    out = []
    for i, token in enumerate(tokens):
        name = MATCHER.canonical(token)
        if name is not None:
            out.append((name, tokens[i - 1] if i > 0 and tokens[i - 1] in COLOURS else None))
    return out


def yes_no_score(response: str, asked: str, truth: list[tuple[str | None, str]]) -> float:
    """10 for the right answer about object `asked`, 0 for the wrong one or an ambiguous answer."""
    answer = normalize_yes_no(response, obj=asked)
    right = "yes" if asked in {name for _, name in truth} else "no"
    return 10.0 if answer == right else 0.0


def _prompt_text(record: Any) -> str:
    prompt = record.get("prompt", record.get("instruction", "")) if isinstance(record, Mapping) \
        else getattr(record, "prompt", "")
    if isinstance(prompt, list):  # chat messages
        parts = []
        for message in prompt:
            content = message.get("content", "")
            parts += [content] if isinstance(content, str) else [p.get("text", "") for p in content]
        prompt = " ".join(parts)
    return str(prompt)


def asked_object(record: Any) -> str | None:
    """The object a yes/no prompt asks about, or None for any other prompt."""
    match = _QUESTION.search(_prompt_text(record))
    return MATCHER.canonical(match.group("object")) if match else None


def score_caption(record: Any, response: str) -> float:
    """`(record, response) -> float` caption scorer (0-10)."""
    return caption_score(response, ground_truth(record))


def score_yes_no(record: Any, response: str) -> float:
    """`(record, response) -> float` yes/no scorer (0 or 10); the question is read from the prompt."""
    asked = asked_object(record)
    if asked is None:
        raise ValueError(f"not a demo yes/no question: {_prompt_text(record)!r:.80}")
    return yes_no_score(response, asked, ground_truth(record))


def score_response(record: Any, response: str) -> float:
    """Yes/no prompts get `score_yes_no`, everything else `score_caption`."""
    return score_yes_no(record, response) if asked_object(record) else score_caption(record, response)
