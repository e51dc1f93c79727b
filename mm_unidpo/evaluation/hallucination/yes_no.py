"""Reading a free-form answer to a POPE question ("Is there a dog in the image?") as yes, no or neither.

:func:`normalize_yes_no` ignores sentences that end in "?" (an echo of the question), then decides in this
order (the first rule that applies decides):

1. An opening that answers outright: "Yes", "Correct", "No", "Nope", "False", "Not at all", "Certainly
   not", "Of course not" -- or that declines to: "Yes and no", "Not sure", "No idea" (ambiguous).
2. A hedge anywhere makes the answer ambiguous: "It's difficult to say", "It is not possible to tell",
   "It's not clear", "maybe", "it might be", "I cannot determine".
3. With the question (or its object), the first mention of the asked object decides: negated in its clause
   ("There is no dog", "I don't see any dogs", "A dog is not present", "a cat rather than a dog") -> no,
   otherwise ("In the image, there is a dog", "A dog can be seen", "There is a dog, but no cat") -> yes.
   The object's COCO synonyms count for a COCO category ("a man" for "person", "a sofa" for "couch").
   Without a mention, a negation of nothing in particular ("I don't see one", "There is no such object",
   "It is not") -> no, and a pronoun affirmation ("There is one", "I can see it") -> yes. An answer about
   other things only ("The image shows a cat", "There is no cat" for a dog question) is ambiguous:
   it does not answer the question, and we do not guess.
4. Without the question: a negation anywhere -> no; else "yes" anywhere or an affirmative statement
   ("There is a dog", "The image shows a dog") -> yes; else ambiguous ("dog", "The sky is blue").

An emphatic opening leans but lets the rest decide: "Certainly." / "Absolutely." / "Of course." are yes,
"Certainly! There is no dog." is no; "No doubt, there is a dog" and "Without a doubt, yes" are yes.
"""

from __future__ import annotations

import re
from functools import lru_cache

from .objects import ObjectMatcher, pluralize, tokens

_CONTRACTIONS = (
    ("’", "'"),
    ("can't", "cannot"),
    ("won't", "will not"),
    ("n't", " not"),
    ("there's", "there is"),
    ("there're", "there are"),
    ("it's", "it is"),
    ("i'm", "i am"),
    ("that's", "that is"),
    ("can not", "cannot"),
)

# Openings (as word sequences): polarity (None: declines to answer) and whether they decide outright.
_OPENINGS: dict[tuple[str, ...], tuple[str | None, bool]] = {
    tuple(k.split()): v
    for k, v in {
        **dict.fromkeys(
            (
                "yes",
                "yeah",
                "yep",
                "yup",
                "yea",
                "correct",
                "true",
                "affirmative",
                "that is correct",
                "that is right",
                "that is true",
            ),
            ("yes", True),
        ),
        **dict.fromkeys(
            (
                "no",
                "nope",
                "nah",
                "false",
                "incorrect",
                "negative",
                "not at all",
                "not really",
                "certainly not",
                "definitely not",
                "absolutely not",
                "of course not",
                "surely not",
                "that is incorrect",
                "that is not correct",
                "that is wrong",
            ),
            ("no", True),
        ),
        **dict.fromkeys(("yes and no", "yes or no", "no idea", "not sure"), (None, True)),
        **dict.fromkeys(
            (
                "certainly",
                "definitely",
                "absolutely",
                "of course",
                "sure",
                "surely",
                "indeed",
                "undoubtedly",
                "no doubt",
                "without a doubt",
                "without doubt",
                "there is no doubt",
            ),
            ("yes", False),
        ),
    }.items()
}
_LONGEST_OPENING = max(len(k) for k in _OPENINGS)

_HEDGE_RE = re.compile(
    r"\b(?:not (?:sure|certain|clear|possible to (?:tell|say|determine|know|see))|unsure|uncertain|unclear|"
    r"(?:difficult|hard|impossible|too \w+) to (?:tell|say|determine|know|judge|see)|"
    r"cannot (?:tell|say|determine|be determined|be sure|be certain|confirm)|unable to (?:tell|say|determine|confirm)|"
    r"do not know|no idea|maybe|perhaps|possibly|probably|might|may|could be|it is possible|yes and no|yes or no|"
    r"not enough information)\b"
)
# Phrases that are no negation ("There is no doubt a dog") or that are one ("a cat rather than a dog").
_EMPHATIC_RE = re.compile(r"\b(?:there is no doubt(?: that)?|no doubt|without (?:a )?doubt|undoubtedly|not only)\b")
_CONTRAST_RE = re.compile(r"\b(?:rather than|instead of)\b")
_CLAUSE_RE = re.compile(
    r"[.;:!?,\n()\"]|\b(?:but|however|whereas|while|although|though|yet)\b|"
    r"\band\b(?=\s+(?:there|a|an|the|some|no|i|it|one|two|three|several|many|this|that)\b)"
)
_NEGATIONS = frozenset(
    {
        "no",
        "not",
        "none",
        "never",
        "without",
        "neither",
        "nor",
        "cannot",
        "nobody",
        "nothing",
        "nowhere",
        "absent",
        "lacks",
        "lacking",
        "devoid",
    }
)
_NEGATIONS_AFTER = frozenset({"not", "absent", "missing", "nowhere", "none", "never"})  # "a dog is not present"
# What may follow a negation that refers to the asked object without naming it ("I don't see one").
_GENERIC = frozenset(
    [
        "it",
        "one",
        "ones",
        "any",
        "anything",
        "such",
        "that",
        "this",
        "these",
        "those",
        "them",
        "they",
        "there",
        "thing",
        "things",
        "object",
        "objects",
        "item",
        "items",
        "kind",
        "sort",
        "like",
        "in",
        "on",
        "of",
        "at",
        "the",
        "a",
        "an",
        "image",
        "picture",
        "photo",
        "photograph",
        "scene",
        "here",
        "visible",
        "present",
        "so",
        "think",
        "see",
        "seen",
        "is",
        "are",
        "be",
        "was",
        "were",
        "do",
        "does",
        "did",
        "i",
        "can",
        "could",
        "all",
        "to",
        "appear",
        "appears",
        "seem",
        "seems",
        "found",
        "shown",
        "show",
        "shows",
        "exist",
        "exists",
        "whatsoever",
        "really",
    ]
)
_ANSWER_RE = re.compile(r"\banswer (?:is |would be )?(yes|no)\b")
_AFFIRMATIVE_RE = re.compile(
    r"\b(?:there (?:is|are)|there (?:appears?|seems?) to be|i (?:can )?see|can be seen|"
    r"(?:is|are) (?:visible|present|shown|seen|depicted)|(?:image|picture|photo) (?:shows|contains|has|depicts|"
    r"features|includes|displays|captures)|it is|this is|these are)\b"
)
_PRONOUN_YES_RE = re.compile(
    r"^(?:there (?:is|are) (?:one|some|it|them)|i (?:can )?see (?:it|one|them|some)|"
    r"it is (?:there|visible|present|in the (?:image|picture|photo))|"
    r"(?:one|it|they) (?:is|are) (?:visible|present|there))\b"
)

_QUESTION_SENTENCE_RE = re.compile(r"[^.!?\n]*\?")
_ARTICLE = r"(?:an?|any|some|the)\s+"
_SCENE = r"(?:the|this|that) (?:image|picture|photo|photograph|scene|frame)"
_QUESTION_RES = tuple(
    re.compile(p)
    for p in (
        rf"\b(?:is|are) there (?:{_ARTICLE})?(?P<object>[a-z][a-z \-']*?)\s+"
        rf"(?:in|on|inside|within|visible in) {_SCENE}",
        rf"\b(?:does|do) {_SCENE} (?:contain|have|show|include|feature|depict) "
        rf"(?:{_ARTICLE})?(?P<object>[a-z][a-z \-']*?)\s*[?.]",
        rf"\b(?:is|are) (?:{_ARTICLE})(?P<object>[a-z][a-z \-']*?) (?:present|visible|shown)\b",
        rf"\bcan you see (?:{_ARTICLE})?(?P<object>[a-z][a-z \-']*?)\s*(?:in {_SCENE}|\?)",
        rf"\b(?:is|are) there (?:{_ARTICLE})?(?P<object>[a-z][a-z \-']*?)\s*\?",
    )
)


def _prepare(text: str) -> str:
    text = text.lower()
    for short, long in _CONTRACTIONS:
        text = text.replace(short, long)
    return text


def pope_object(question: str | None) -> str | None:
    """The object a POPE-style question asks about ("Is there a dining table in the image?" -> "dining
    table"), or None when the question is not of that form."""
    if not question:
        return None
    text = re.sub(r"\s+", " ", _prepare(question))
    for pattern in _QUESTION_RES:
        m = pattern.search(text)
        if m:
            return " ".join(tokens(m["object"])) or None
    return None


@lru_cache(maxsize=1)
def _coco() -> ObjectMatcher:
    return ObjectMatcher.coco()


@lru_cache(maxsize=4096)
def _target(obj: str) -> tuple[ObjectMatcher, str] | None:
    """(matcher, object name) for finding mentions of the asked object: a COCO category with its synonyms,
    any other name (or a single synonym, "man") as itself, singular or plural."""
    name = " ".join(tokens(obj))
    if not name:
        return None
    canonical = _coco().canonical(name)
    if canonical is not None and name in (canonical, pluralize(canonical)):  # "Are there any cell phones ...?"
        return _coco(), canonical
    # Singular guesses of a plural name ("fences" -> "fence", "benches" -> "bench") match too.
    head, _, last = name.rpartition(" ")
    guesses = (
        {last[:-3] + "y", last[:-2], last[:-1]}
        if last.endswith("ies")
        else {last[:-2], last[:-1]}
        if last.endswith("es")
        else {last[:-1]}
        if last.endswith("s")
        else set()
    )
    return ObjectMatcher({name: [f"{head} {g}".strip() for g in guesses if len(g) > 1]}), name


def _opening(words: list[str]) -> tuple[str | None, bool] | None:
    for size in range(min(_LONGEST_OPENING, len(words)), 0, -1):
        found = _OPENINGS.get(tuple(words[:size]))
        if found is not None:
            return found
    return None


def _clauses(text: str) -> list[list[str]]:
    text = _CONTRAST_RE.sub(" not ", _EMPHATIC_RE.sub(" ", text))
    return [words for words in (tokens(part) for part in _CLAUSE_RE.split(text)) if words]


def _about_object(clauses: list[list[str]], matcher: ObjectMatcher, name: str) -> str | None:
    for words in clauses:  # the first mention of the asked object decides
        for start, end, obj in matcher.spans(words):
            if obj == name:
                negated = _NEGATIONS.intersection(words[:start]) or _NEGATIONS_AFTER.intersection(words[end:])
                return "no" if negated else "yes"
    for words in clauses:  # no mention: a negation of nothing in particular, or "there is one"
        first_negation = next((i for i, w in enumerate(words) if w in _NEGATIONS), None)
        if first_negation is not None:
            if _GENERIC.issuperset(words[first_negation + 1 :]):
                return "no"
        elif "yes" in words or _PRONOUN_YES_RE.search(" ".join(words)):  # "I'd say yes", "There is one"
            return "yes"
    return None


def _statement(text: str, target: tuple[ObjectMatcher, str] | None) -> str | None:
    clauses = _clauses(text)
    said = _ANSWER_RE.search(" ".join(w for words in clauses for w in words))
    if said:
        return said.group(1)
    if target is not None:
        return _about_object(clauses, *target)
    if any(_NEGATIONS.intersection(words) for words in clauses):
        return "no"
    if any("yes" in words or _AFFIRMATIVE_RE.search(" ".join(words)) for words in clauses):
        return "yes"
    return None


def normalize_yes_no(answer: str | None, question: str | None = None, *, obj: str | None = None) -> str | None:
    """``"yes"``, ``"no"``, or ``None`` for an answer that is neither (empty, hedged, off-topic).

    ``question`` (the POPE question, whose object is read with :func:`pope_object`) or ``obj`` (the
    object itself) lets the answer be read about the asked object; without either, or when the question
    names no object, the answer is read on its own (see the module doc for the rules).
    """
    if answer is None:
        return None
    text = _QUESTION_SENTENCE_RE.sub(" ", _prepare(str(answer)))  # an echo of the question is no answer
    words = tokens(text)
    if not words:
        return None
    opening = _opening(words)
    if opening is not None and opening[1]:
        return opening[0]
    if _HEDGE_RE.search(" ".join(words)):
        return None
    asked = obj if obj is not None else pope_object(question)
    decided = _statement(text, _target(asked) if asked else None)
    if decided is None and opening is not None:
        return opening[0]  # an emphatic opening with nothing decisive after it: "Absolutely."
    return decided
