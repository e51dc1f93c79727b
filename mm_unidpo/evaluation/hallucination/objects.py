"""Finding objects in text with a synonym table (CHAIR's ``synonyms.txt`` format): word boundaries,
singular and plural forms, multi-word synonyms, longest match first."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from .coco_synonyms import CHAIR_RULES, COCO_SYNONYMS

_IRREGULAR_PLURALS = {
    "man": "men",
    "woman": "women",
    "child": "children",
    "person": "people",
    "mouse": "mice",
    "foot": "feet",
    "tooth": "teeth",
    "goose": "geese",
    "ox": "oxen",
    "knife": "knives",
    "leaf": "leaves",
    "shelf": "shelves",
    "wolf": "wolves",
    "loaf": "loaves",
    "calf": "calves",
    "half": "halves",
    "wife": "wives",
    "life": "lives",
    "scarf": "scarves",
    "thief": "thieves",
    "hoof": "hooves",
    "elf": "elves",
    "cactus": "cacti",
    "fungus": "fungi",
    "die": "dice",
    "potato": "potatoes",
    "tomato": "tomatoes",
    "hero": "heroes",
    "volcano": "volcanoes",
    "mango": "mangoes",
}
_INVARIANT_PLURALS = {
    "sheep",
    "deer",
    "fish",
    "moose",
    "bison",
    "aircraft",
    "people",
    "series",
    "species",
    "glasses",
    "scissors",
    "skis",
    "jeans",
    "pants",
    "shorts",
    "trousers",
    "broccoli",
    "police",
    "cattle",
    "luggage",
    "furniture",
    "equipment",
    "food",
    "meat",
    "corn",
}


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


def tokens(text: str) -> list[str]:
    """Lower-case words: hyphens and slashes separate words ("hot-dog" is "hot dog"), so do apostrophes
    ("dog's" -> "dog s")."""
    return re.findall(r"[a-z0-9]+", text.lower())


class ObjectMatcher:
    """Finds the objects a text mentions, from a synonym table {object: [synonyms]}.

    Every synonym (and the object's own name) is matched in its singular and plural form on word
    boundaries; at each position the longest synonym wins and its words are consumed, so "hot dog"
    never also counts as "dog" and "dining table" never also as "table". A synonym claimed by two
    objects is an error (the table would be ambiguous).

    ``compounds`` (phrase -> the word of the phrase whose object it is, or None for no object) are
    matched like synonyms where the table has no phrase of their own: "baby elephant" -> "elephant" is
    an elephant and no person, "train tracks" -> None is no train. ``context`` rules (word, context
    words, window, require) keep a match of ``word`` only when a context word is (``require=True``) or
    is not (``False``) within ``window`` tokens of it (anywhere in the text when window is None):
    "glove" is a baseball glove only in a text about baseball, "chicken" no bird next to "broccoli".
    :meth:`coco` applies the original CHAIR's rules and ours (:mod:`.coco_synonyms`).
    """

    def __init__(
        self,
        synonyms: Mapping[str, Iterable[str]],
        *,
        compounds: Mapping[str, str | None] | None = None,
        context: Iterable[tuple[str, Iterable[str], int | None, bool]] = (),
    ):
        self.objects: tuple[str, ...] = tuple(sorted(_norm(o) for o in synonyms))
        self._phrases: dict[tuple[str, ...], str | None] = {}
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
        for phrase, head in (compounds or {}).items():
            owner = None if head is None else self._phrases.get(tuple(_norm(head).split()))
            for form in {_norm(phrase), pluralize(_norm(phrase))}:
                self._phrases.setdefault(tuple(form.split()), owner)  # the table's own phrases win
        self._context: dict[tuple[str, ...], list[tuple[frozenset[str], int | None, bool]]] = {}
        for word, near, window, require in context:
            near_forms = frozenset(form for w in near for form in (_norm(w), pluralize(_norm(w))))
            for form in {_norm(word), pluralize(_norm(word))}:
                self._context.setdefault(tuple(form.split()), []).append((near_forms, window, require))
        self._longest = max((len(k) for k in self._phrases), default=0)

    @classmethod
    def from_lines(cls, lines: Iterable[str], **rules: Any) -> ObjectMatcher:
        """The original CHAIR ``synonyms.txt`` format: ``object, synonym, synonym`` per line;
        blank lines and ``#`` comments are skipped. ``rules``: ``compounds`` / ``context`` as above."""
        table: dict[str, list[str]] = {}
        for line in lines:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            names = [w.strip() for w in line.split(",") if w.strip()]
            table.setdefault(names[0], []).extend(names[1:])
        return cls(table, **rules)

    @classmethod
    def from_file(cls, path: str | os.PathLike, **rules: Any) -> ObjectMatcher:
        with open(path, encoding="utf-8") as f:
            return cls.from_lines(f, **rules)

    @classmethod
    def coco(cls) -> ObjectMatcher:
        """The 80 COCO categories with common synonyms (:data:`COCO_SYNONYMS`, written for this
        project) and the CHAIR rules (:data:`CHAIR_COMPOUNDS`, :data:`CHAIR_CONTEXT`). For numbers
        comparable with published CHAIR results, load the original table instead, with the same rules:
        ``ObjectMatcher.from_file("synonyms.txt", **CHAIR_RULES)`` (github.com/LisaAnne/Hallucination, data/)."""
        return cls(COCO_SYNONYMS, **CHAIR_RULES)

    def canonical(self, name: str) -> str | None:
        """The object a single name (e.g. a ground-truth label "Dining tables") stands for, or None."""
        return self._phrases.get(tuple(tokens(name)))

    def spans(self, words: list[str]) -> list[tuple[int, int, str]]:
        """(start, end, object) of every mention in a list of words (:func:`tokens`), in order."""
        found: list[tuple[int, int, str]] = []
        i = 0
        while i < len(words):
            for size in range(min(self._longest, len(words) - i), 0, -1):
                key = tuple(words[i : i + size])
                if key in self._phrases:
                    obj = self._phrases[key]
                    if obj is not None and self._in_context(key, words, i, i + size):
                        found.append((i, i + size, obj))
                    i += size
                    break
            else:
                i += 1
        return found

    def _in_context(self, key: tuple[str, ...], words: list[str], start: int, end: int) -> bool:
        for near, window, require in self._context.get(key, ()):
            around = (
                words[:start] + words[end:]
                if window is None
                else words[max(0, start - window) : start] + words[end : end + window]
            )
            if any(t in near for t in around) != require:
                return False
        return True

    def mentions(self, text: str) -> list[tuple[str, str]]:
        """(object, matched words) for every mention, in order of appearance."""
        words = tokens(text)
        return [(obj, " ".join(words[a:b])) for a, b, obj in self.spans(words)]

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
    return " ".join(tokens(phrase))


def coco_ground_truth(
    matcher: ObjectMatcher, instances: Mapping[str, Any] | None = None, captions: Mapping[str, Any] | None = None
) -> dict[int, set[str]]:
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
