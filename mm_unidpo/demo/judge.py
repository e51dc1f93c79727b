"""The demo's rule judge: the package's object judge (`mm_unidpo.onpolicy.judges.objects`) on the demo
world's objects and colours, with the ground truth read from the demo's records and images, 0-10.

    score_caption(record, "A red star and a yellow moon.")   # record: PreferenceRecord, dict or Scene
    score_yes_no(record, "No.")                               # the question is read from the prompt
    score_response(record, response)                          # either, by the prompt

Usable as `mm-unidpo score --scorer mm_unidpo.demo.judge:score_response` or `mm-unidpo judge --judge
mm_unidpo.demo.judge:score_response` (any `(record, response) -> float`). The ground truth is taken from,
in order: a `objects` / `ground_truth` entry of a dict record (a list of names or of "colour name"
phrases), the attribute of that name, or the text chunk the demo world writes into every scene PNG (so a
saved demo data file needs no side file). The caption score is `object_score` (see its module): 1 per
object named (0.5 with a wrong colour), 2 off per hallucinated or repeated mention, on 0-10.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image

from mm_unidpo.data.images import resolve_image_path
from mm_unidpo.evaluation.hallucination import ObjectMatcher, normalize_yes_no
from mm_unidpo.onpolicy.judges.objects import object_score, parse_truth

from .world import COLOURS, OBJECTS, QUESTION, read_annotation

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
        return parse_truth(value, MATCHER, COLOURS)
    images = record.get("images") if isinstance(record, Mapping) else getattr(record, "images", None)
    root = record.get("image_root") if isinstance(record, Mapping) else getattr(record, "image_root", None)
    for ref in images or []:
        found = read_annotation(_open(ref, root))
        if found is not None:
            return [(colour, name) for colour, name in found]
    raise ValueError("no ground truth: the record has no 'objects' and its image carries no demo annotation")


def _open(ref: Any, root: str | None) -> Image.Image:
    if isinstance(ref, Image.Image):
        return ref
    if isinstance(ref, Mapping) and ref.get("bytes_b64") is not None:
        import base64

        ref = base64.b64decode(ref["bytes_b64"])
    if isinstance(ref, (bytes, bytearray)):
        return Image.open(io.BytesIO(ref))
    return Image.open(resolve_image_path(str(ref), root))


def caption_score(response: str, truth: list[tuple[str | None, str]]) -> float:
    """The 0-10 caption score of `response` against (colour, object) ground truth."""
    return object_score(response, truth, MATCHER, COLOURS)[0]


def yes_no_score(response: str, asked: str, truth: Sequence[tuple[str | None, str]]) -> float:
    """10 for the right answer about object `asked`, 0 for the wrong one or an ambiguous answer."""
    answer = normalize_yes_no(response, obj=asked)
    right = "yes" if asked in {name for _, name in truth} else "no"
    return 10.0 if answer == right else 0.0


def _prompt_text(record: Any) -> str:
    prompt = (
        record.get("prompt", record.get("instruction", ""))
        if isinstance(record, Mapping)
        else getattr(record, "prompt", "")
    )
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
