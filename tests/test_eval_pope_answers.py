"""Reading POPE answers (mm_unidpo.evaluation.hallucination.yes_no) on a case set, with and without the question.

tests/data/pope_answers.tsv: 806 answers to POPE questions ("Is there a {object} in the image?"): realistic
phrasings by class (plain, flip, hedge, question, off_topic, llava, multiword, synonym, non_coco) written
as templates over object pairs, and 70 "heldout" answers written after the parser and not tuned on. Columns:
the reading we expect with the question (``want``) and without it (``want_blind``; "?" = not checked);
"-" is ambiguous (None). The same cases were read by RUCAIBox/POPE's evaluate.py (agrees on 525/806; it
has no "ambiguous", turns "No!" / "Nope" into yes and "No doubt, there is a dog" / "There is a dog, but no
cat" into no) and lmms-eval 0.7.3's pope utils (162/806: only a verbatim "yes" / "no" counts), see eval/README.md.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from mm_unidpo.evaluation.hallucination import normalize_yes_no, pope_object, pope_scores

CASES = Path(__file__).parent / "data" / "pope_answers.tsv"


def _value(cell: str) -> str | None:
    return None if cell == "-" else cell


def _cases() -> list[dict[str, str]]:
    with open(CASES, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def test_case_set_with_the_question():
    cases = _cases()
    assert len(cases) == 806 and {c["class"] for c in cases} >= {"flip", "hedge", "question", "llava", "heldout"}
    wrong = [(c["question"], c["answer"], c["want"], normalize_yes_no(c["answer"], c["question"])) for c in cases
             if normalize_yes_no(c["answer"], c["question"]) != _value(c["want"])]
    assert wrong == []


def test_case_set_without_the_question():
    cases = [c for c in _cases() if c["want_blind"] != "?"]
    wrong = [(c["answer"], c["want_blind"], normalize_yes_no(c["answer"])) for c in cases
             if normalize_yes_no(c["answer"]) != _value(c["want_blind"])]
    assert len(cases) == 736 and wrong == []


DOG = "Is there a dog in the image?"


@pytest.mark.parametrize("answer, question, expected", [
    # flips: the negation of an emphatic word, and "no doubt"
    ("Certainly not.", DOG, "no"), ("Definitely not.", None, "no"), ("Absolutely not.", DOG, "no"),
    ("Of course not.", None, "no"), ("Certainly.", DOG, "yes"), ("Definitely.", None, "yes"),
    ("No doubt, there is a dog in the image.", DOG, "yes"), ("No doubt, there is a dog in the image.", None, "yes"),
    ("Without a doubt, yes.", None, "yes"), ("There is no doubt that a dog is in the image.", DOG, "yes"),
    ("No, there is no dog.", DOG, "no"), ("Certainly! There is no dog in the image.", DOG, "no"),
    # hedges are no answer
    ("It's difficult to say.", DOG, None), ("It is not possible to tell from the image.", DOG, None),
    ("It's not clear.", None, None), ("Yes and no", DOG, None), ("There might be a dog.", DOG, None),
    ("It is not a dog.", DOG, "no"), ("It is clear that there is a dog.", DOG, "yes"),
    # the question names the object the answer is read about
    ("There is a dog, but no cat.", DOG, "yes"), ("There is a cat, but no dog.", DOG, "no"),
    ("There is a dog, but no cat.", None, "no"),  # without the question: a negation anywhere is no
    ("The image shows a cat.", DOG, None), ("There is no cat.", DOG, None), ("The image shows a dog.", DOG, "yes"),
    ("The image shows a cat.", None, "yes"), ("There is a cat rather than a dog.", DOG, "no"),
    ("There is a hot dog on the plate.", DOG, None), ("There is a dog.", "Is there a hot dog in the image?", None),
    ("A man is standing.", "Is there a person in the image?", "yes"),
    ("A man is standing.", "Is there a woman in the image?", None),  # a synonym asked is matched as itself
    ("I don't see one.", DOG, "no"), ("There is one.", DOG, "yes"),
    # common LLaVA phrasings
    ("In the image, there is a dog.", DOG, "yes"), ("A dog can be seen in the image.", DOG, "yes"),
    ("This image shows a dog.", None, "yes"), ("Of course.", DOG, "yes"), ("Absolutely.", None, "yes"),
    ("Nope", DOG, "no"), ("No!", None, "no"), ("", DOG, None), (None, DOG, None),
    # an echo of the question is no answer
    ("Is there a dog in the image? No.", DOG, "no"), ("Is there a dog in the image? Yes.", DOG, "yes"),
    ("Is there a dog?", DOG, None),
])
def test_issue_phrasings(answer, question, expected):
    assert normalize_yes_no(answer, question) == expected


def test_object_argument_equals_the_question():
    assert normalize_yes_no("There is a dog, but no cat.", obj="dog") == "yes"
    assert normalize_yes_no("There is a dog, but no cat.", obj="cat") == "no"
    assert normalize_yes_no("There are two benches.", obj="benches") == "yes"  # plural name, singular mention


@pytest.mark.parametrize("question, obj", [
    ("Is there a dog in the image?", "dog"), ("Is there an airplane in the image?", "airplane"),
    ("Is there a dining table in the image?\nAnswer the question using a single word or phrase.", "dining table"),
    ("Are there any cell phones in this picture?", "cell phones"), ("Does the image contain a teddy bear?", "teddy bear"),
    ("Is a hair drier visible in the image?", "hair drier"), ("Is there a fire hydrant?", "fire hydrant"),
    ("What color is the car?", None), ("Describe the image.", None), ("", None), (None, None),
])
def test_pope_object(question, obj):
    assert pope_object(question) == obj


def test_pope_scores_read_answers_with_their_questions():
    answers = ["There is a dog, but no cat.", "There is a dog, but no cat.", "The image shows a cat."]
    questions = [DOG, "Is there a cat in the image?", DOG]
    with_q = pope_scores(answers, ["yes", "no", "no"], questions=questions)
    assert (with_q.tp, with_q.tn, with_q.ambiguous) == (1, 1, 1) and with_q.accuracy == pytest.approx(2 / 3)
    blind = pope_scores(answers, ["yes", "no", "no"])
    assert (blind.tp, blind.fn, blind.tn, blind.fp) == (0, 1, 1, 1)
    with pytest.raises(ValueError, match="2 questions but 3 labels"):
        pope_scores(answers, ["yes", "no", "no"], questions=questions[:2])
    assert math.isclose(pope_scores(["Yes"], ["yes"], questions=[None]).accuracy, 1.0)


def test_demo_judge_reads_yes_no_answers_about_the_asked_object():
    from mm_unidpo.demo.judge import yes_no_score

    truth = [("red", "circle")]
    assert yes_no_score("There is a circle, but no star.", "circle", truth) == 10.0
    assert yes_no_score("There is a star, but no circle.", "circle", truth) == 0.0
    assert yes_no_score("There is a star.", "circle", truth) == 0.0  # about another shape: no answer
