"""CHAIR mentioned objects with the default COCO table and rules, on a caption set, and the rules one by one.

tests/data/chair_captions.tsv: 182 captions (COCO-style and LLaVA-style detailed ones) with plurals, synonyms,
multi-word objects and the original CHAIR's special cases, and the objects each mentions (written by hand;
"heldout": 30 written after the rules and not tuned on). On the same captions the original CHAIR
(LisaAnne/Hallucination utils/chair.py via its standalone port, with nltk and pattern's singularize) agrees
with these sets on 152/182; its misses are its singularizer ("bus" -> "bu", "ties" -> "ty"), its tokenizer
("hot-dogs"), its table ("motor bike" with a stray space, "iPhone" never matching lower-cased text) and rules it
lacks. See eval/README.md.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from mm_unidpo.evaluation.hallucination import CHAIR_RULES, ObjectMatcher, chair_scores

CASES = Path(__file__).parent / "data" / "chair_captions.tsv"
# Known misses, kept visible: "its baby" is an elephant's, but a bare "baby" is a person.
KNOWN_MISSES = {"An elephant and its baby are walking along a dirt road."}


@pytest.fixture(scope="module")
def coco():
    return ObjectMatcher.coco()


def _cases() -> list[dict[str, str]]:
    with open(CASES, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def test_caption_set(coco):
    cases = _cases()
    assert len(cases) == 182 and sum(c["set"] == "heldout" for c in cases) == 30
    wrong = {}
    for c in cases:
        want = {o.strip() for o in c["objects"].split(",") if o.strip()}
        got = set(coco.objects_in(c["caption"]))
        assert want <= set(coco.objects) or not want, c
        if got != want:
            wrong[c["caption"]] = (sorted(got), sorted(want))
    assert set(wrong) == KNOWN_MISSES, wrong


@pytest.mark.parametrize("caption, objects", [
    # the original CHAIR's rules
    ("A baby elephant walks with its herd.", ["elephant"]), ("Two adult giraffes.", ["giraffe"]),
    ("A baby holding a toy.", ["person"]), ("An adult and a child.", ["person"]),
    ("A passenger train at the station.", ["train"]), ("Passengers on a passenger jet.", ["person", "airplane"]),
    ("Train tracks run through the field.", []), ("A train on the train tracks.", ["train"]),
    ("A toilet seat is up.", ["toilet"]), ("A toilet next to a chair.", ["toilet", "chair"]),
    # rules for synonyms the original's table lacks
    ("A baseball player holding a bat.", ["person", "baseball bat"]), ("A baseball on the grass.", ["sports ball"]),
    ("A football field at night.", []), ("A baseball glove.", ["baseball glove"]),
    ("A man wearing gloves.", ["person"]), ("The catcher holds out his glove.", ["person", "baseball glove"]),
    ("A plate of chicken with broccoli.", ["broccoli"]), ("Fried chicken.", []),
    ("A chicken in the yard.", ["bird"]), ("Ducks on a pond.", ["bird"]), ("Roast duck with rice.", []),
    ("A man at the bus stop.", ["person"]), ("A bus at the bus stop.", ["bus"]),
    ("A subway car full of people.", ["train", "person"]),
    # what we already did better than the original, kept
    ("Two buses and a bus.", ["bus"]), ("A man in two ties.", ["person", "tie"]), ("A motor bike.", ["motorcycle"]),
    ("An iPhone.", ["cell phone"]), ("Two hot-dogs.", ["hot dog"]), ("A hot dog and a dog.", ["hot dog", "dog"]),
])
def test_rules(coco, caption, objects):
    assert coco.objects_in(caption) == objects


def test_rules_with_the_original_table():
    """The same rules on a table where "seat" is a chair and "baby" a person (the original synonyms.txt format)."""
    lines = ["person, baby, adult, passenger, man", "chair, seat", "toilet", "elephant", "train", "bird, chicken"]
    plain = ObjectMatcher.from_lines(lines)
    ruled = ObjectMatcher.from_lines(lines, **CHAIR_RULES)
    assert plain.objects_in("A baby elephant.") == ["person", "elephant"]
    assert ruled.objects_in("A baby elephant.") == ["elephant"]
    assert plain.objects_in("The seat of the toilet is up.") == ["chair", "toilet"]
    assert ruled.objects_in("The seat of the toilet is up.") == ["toilet"]
    assert ruled.objects_in("A man on a seat.") == ["person", "chair"]
    assert ruled.objects_in("A chicken with broccoli.") == [] and ruled.objects_in("A chicken.") == ["bird"]


def test_context_rules_windows_and_requirements():
    m = ObjectMatcher({"bird": ["chicken"], "glove": []}, context=[("chicken", ["rice"], 2, False),
                                                                 ("glove", ["baseball"], None, True)])
    assert m.objects_in("chicken and rice") == [] and m.objects_in("a chicken far away from the rice") == ["bird"]
    assert m.objects_in("gloves") == [] and m.objects_in("baseball practice: gloves on") == ["glove"]
    compounds = ObjectMatcher({"person": ["baby"], "dog": []}, compounds={"baby dog": "dog", "dog house": None})
    assert compounds.objects_in("a baby dog near a dog house") == ["dog"]
    assert compounds.objects_in("baby dogs") == ["dog"]  # plural of a compound


def test_chair_counts_distinct_objects_unless_asked(coco):
    s = chair_scores(["A dog and another dog chase a ball."], [["dog"]], coco)
    assert (s.mentioned, s.hallucinated, s.chair_i) == (2, 1, 0.5)
    r = chair_scores(["A dog and another dog chase a ball."], [["dog"]], coco, count_repeats=True)
    assert (r.mentioned, r.hallucinated) == (3, 1)  # as the original CHAIR: each mention counts
