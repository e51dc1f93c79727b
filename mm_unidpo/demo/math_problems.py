"""Seeded multi-step arithmetic word problems and the rule judge of the math demo (`--task math`).

Problems chain one to three small integer operations (buy more, give away, boxes of equal size, share
equally) so that a 135M-parameter instruct model solves some of them and fails others: sampled solutions
then differ in correctness, which is what preference pairs need. Grading uses the project's math harness
(`extract_answer`, `is_equivalent`).

    score_solution(record, response)   # `(record, response) -> float` for `mm-unidpo score --scorer`
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from mm_unidpo.evaluation.math import extract_answer, is_equivalent

NAMES = ("Tom", "Mia", "Sam", "Ava", "Leo", "Zoe", "Max", "Ella")
ITEMS = ("apples", "pencils", "stickers", "marbles", "cookies", "books", "stamps", "shells")
INSTRUCTION = 'Solve it step by step, then finish with "The answer is N."'
ANSWER_PHRASE = re.compile(r"the answer is\s*:?\s*\$?-?\d", re.IGNORECASE)
CORRECT, FORMAT, CONCISE = 7.0, 2.0, 1.0  # score parts (sum 10)
CONCISE_WORDS = 120


@dataclass
class Problem:
    question: str
    answer: int
    steps: int

    @property
    def prompt(self) -> str:
        return f"{self.question} {INSTRUCTION}"


def make_problem(rng: np.random.Generator, max_steps: int = 2) -> Problem:
    """One or more operations on a running total (a non-negative integer), small numbers: the first
    step is a start amount or equal boxes, then "gets more" / "gives away" / "doubles"."""
    name, item = str(rng.choice(NAMES)), str(rng.choice(ITEMS))
    if rng.random() < 0.75:
        total, steps = int(rng.integers(2, 10)), 0
        sentences = [f"{name} has {total} {item}."]
    else:
        boxes, per_box = int(rng.integers(2, 4)), int(rng.integers(2, 5))
        total, steps = boxes * per_box, 1
        sentences = [f"{name} buys {boxes} boxes of {item} with {per_box} {item} in each box."]
    while steps < max_steps and (steps == 0 or rng.random() < 0.6):
        op = str(rng.choice(["more", "more", "away", "double"]))
        if op == "more":
            k = int(rng.integers(1, 9))
            sentences.append(f"Then {name} gets {k} more {item}.")
            total += k
        elif op == "away" and total > 1:
            k = int(rng.integers(1, total))
            sentences.append(f"Then {name} gives {k} {item} to a friend.")
            total -= k
        else:
            sentences.append(f"Then {name} doubles the number of {item}.")
            total *= 2
        steps += 1
    sentences.append(f"How many {item} does {name} have now?")
    return Problem(" ".join(sentences), total, max(steps, 1))


def make_problems(n: int, seed: int) -> list[Problem]:
    rng = np.random.default_rng(seed)
    return [make_problem(rng) for _ in range(n)]


def is_correct(response: str, answer: int | str) -> bool:
    return is_equivalent(extract_answer(response or "", "gsm8k"), str(answer))


def solution_score(response: str, answer: int | str) -> float:
    """0-10: 7 for the right final answer (math harness grading), 2 for stating it as asked ("The answer
    is N."), 1 for staying under 120 words (rambling past the answer is a common small-model failure)."""
    score = CORRECT * is_correct(response, answer)
    score += FORMAT * bool(ANSWER_PHRASE.search(response or ""))
    score += CONCISE * (0 < len((response or "").split()) <= CONCISE_WORDS)
    return score


def score_solution(record: Any, response: str) -> float:
    """`(record, response) -> float`: the record carries the gold answer as `answer` (dict key or attribute)."""
    answer = record.get("answer") if isinstance(record, Mapping) else getattr(record, "answer", None)
    if answer is None:
        raise ValueError("the record has no 'answer' to grade against")
    return solution_score(response, answer)
