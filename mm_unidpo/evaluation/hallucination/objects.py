"""Finding objects in text with a synonym table (CHAIR's ``synonyms.txt`` format): word boundaries,
singular and plural forms, multi-word synonyms, longest match first."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from .coco_synonyms import COCO_SYNONYMS

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
