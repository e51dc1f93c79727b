"""Math benchmarks (GSM8K, MATH-500, AIME24, AMC23, Minerva Math): loading, gold answers, prompts.

Records come from local JSON lines (or a JSON list) or from the hub via ``datasets.load_dataset``.
The question is the ``problem`` field (else ``question``); the gold answer comes from, in order:
GSM8K's ``#### N`` line; an ``answer`` field (MATH-500, AIME, AMC; ``27.0`` -> ``27``, ``073`` -> ``73``);
the last ``\\boxed{}`` of ``solution`` (Minerva Math, or MATH without an answer field).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .extract import BENCHMARKS, extract_answer

# benchmark -> (hub id, config, split); only used when no local file is given.
HUB_SOURCES: dict[str, tuple[str, str | None, str]] = {
    "gsm8k": ("openai/gsm8k", "main", "test"),
    "math500": ("HuggingFaceH4/MATH-500", None, "test"),
    "aime24": ("HuggingFaceH4/aime_2024", None, "train"),
    "amc23": ("math-ai/amc23", None, "test"),
    "minerva_math": ("math-ai/minervamath", None, "test"),
}
# Fields kept with each item for the per-level / per-subject breakdowns.
META_FIELDS = ("level", "subject", "type")

COT_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
TEMPLATES = ("cot", "fewshot")
# A base model continues with the next "Question:"; generation stops there and the tail is cut.
FEWSHOT_STOP = ("\nQuestion:",)
# Worked examples for the few-shot template (written for this harness, not taken from any test set).
FEWSHOT_EXAMPLES: tuple[tuple[str, str], ...] = (
    (
        "A baker makes 24 muffins and sells 3 boxes of 6 muffins each. How many muffins are left?",
        "The baker sells 3 * 6 = 18 muffins, so 24 - 18 = 6 muffins are left. The answer is 6.",
    ),
    (
        "What is the value of $x$ if $3x + 5 = 20$?",
        "Subtracting 5 from both sides gives $3x = 15$, so $x = 5$. The answer is 5.",
    ),
    (
        "Two fair six-sided dice are rolled. What is the probability that the sum is 7?",
        "There are 36 equally likely outcomes and 6 of them sum to 7: (1,6), (2,5), (3,4), (4,3), (5,2) and "
        "(6,1). The probability is $\\frac{6}{36} = \\frac{1}{6}$. The answer is $\\frac{1}{6}$.",
    ),
    (
        "What is the length of the diagonal of a square with side length 3?",
        "By the Pythagorean theorem the diagonal is $\\sqrt{3^2 + 3^2} = \\sqrt{18} = 3\\sqrt{2}$. "
        "The answer is $3\\sqrt{2}$.",
    ),
)


@dataclass
class MathItem:
    """One benchmark question with its gold answer."""

    idx: int  # position in the benchmark (the resume key)
    uid: str  # the record's own id, checked on resume so a changed data file is noticed
    question: str
    gold: str
    meta: dict[str, Any] = field(default_factory=dict)


def check_benchmark(name: str) -> str:
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; expected one of {', '.join(BENCHMARKS)}")
    return name


def read_json_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Records of a JSON-lines file (blank lines skipped) or of a JSON list."""
    text = Path(path).read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        return list(json.loads(text))
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _is_local(source: str) -> bool:
    return os.path.exists(source) or source.endswith((".jsonl", ".json"))


def load_records(
    benchmark: str, source: str | None = None, *, split: str | None = None, data_dir: str | os.PathLike | None = None
) -> list[dict[str, Any]]:
    """Raw records: ``source`` (a local file or hub id), else ``data_dir/<benchmark>_test.jsonl``, else the hub."""
    check_benchmark(benchmark)
    if source is None and data_dir is not None:
        local = Path(data_dir) / f"{benchmark}_test.jsonl"
        if not local.is_file():
            raise FileNotFoundError(f"{local} not found (expected in --data-dir for {benchmark})")
        source = str(local)
    if source is not None and _is_local(source):
        return read_json_records(source)
    hub_id, config, default_split = HUB_SOURCES[benchmark]
    if source is not None and source != hub_id:
        hub_id, config = source, None
    import datasets  # imported here: only hub loading needs it

    return [dict(r) for r in datasets.load_dataset(hub_id, config, split=split or default_split)]


def _clean_gold(answer: Any) -> str:
    if isinstance(answer, float) and answer.is_integer():
        return str(int(answer))  # AMC stores 27.0
    s = str(answer).strip()
    if re.fullmatch(r"-?\d+\.0+", s):
        s = s.split(".")[0]
    if re.fullmatch(r"0+\d+", s):
        s = str(int(s))  # AIME answers are zero-padded: "073"
    return s


def gold_answer(record: dict[str, Any], benchmark: str) -> str:
    """The reference answer of a record; raises ValueError when none can be found."""
    check_benchmark(benchmark)
    if benchmark == "gsm8k":
        answer = extract_answer(str(record.get("answer", "")), "gsm8k")
    elif record.get("answer") not in (None, ""):
        answer = _clean_gold(record["answer"])
    else:
        answer = extract_answer(str(record.get("solution", "")), benchmark)
    if not answer:
        raise ValueError(f"no gold answer in {benchmark} record {str(record)[:200]}")
    return answer


def question_of(record: dict[str, Any]) -> str:
    for key in ("problem", "question"):
        if record.get(key):
            return str(record[key])
    raise ValueError(f"record has no 'problem' or 'question' field: {sorted(record)}")


def check_limit(limit: int | None) -> int | None:
    """``--limit``: None (every question) or N >= 1; 0 used to run every question and -1 all but the last."""
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be >= 1 (got {limit}); leave it out to run every question")
    return limit


def to_items(records: list[dict[str, Any]], benchmark: str, limit: int | None = None) -> list[MathItem]:
    """The first ``limit`` records as items; records past the limit are not read for answers."""
    items = []
    for i, record in enumerate(records[: check_limit(limit)]):
        uid = next((record[k] for k in ("unique_id", "id", "idx") if record.get(k) not in (None, "")), i)
        meta = {k: record[k] for k in META_FIELDS if k in record}
        items.append(MathItem(i, str(uid), question_of(record), gold_answer(record, benchmark), meta))
    return items


def load_benchmark(
    benchmark: str,
    source: str | None = None,
    *,
    split: str | None = None,
    data_dir: str | os.PathLike | None = None,
    limit: int | None = None,
) -> list[MathItem]:
    """Items of one benchmark (see :func:`load_records` for where they come from)."""
    return to_items(load_records(benchmark, source, split=split, data_dir=data_dir), benchmark, limit)


def fewshot_prefix(num_shots: int = len(FEWSHOT_EXAMPLES)) -> str:
    shots = FEWSHOT_EXAMPLES[:num_shots]
    return "".join(f"Question: {q}\nAnswer: {a}\n\n" for q, a in shots)


def build_prompt(
    question: str, template: str, tokenizer: Any = None, *, num_shots: int = len(FEWSHOT_EXAMPLES)
) -> tuple[str, bool]:
    """(prompt text, whether the tokenizer should add its special tokens).

    ``cot``: the Qwen2.5-Math instruction appended to the question, through the tokenizer's chat
    template (which already holds BOS, hence False). ``fewshot``: plain text for base models.
    """
    if template == "cot":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                "the 'cot' template needs a tokenizer with a chat template; use --template fewshot for base models"
            )
        messages = [{"role": "user", "content": f"{question}\n{COT_INSTRUCTION}"}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True), False
    if template == "fewshot":
        return f"{fewshot_prefix(num_shots)}Question: {question}\nAnswer:", True
    raise ValueError(f"unknown template {template!r}; expected one of {TEMPLATES}")


def stop_strings(template: str) -> tuple[str, ...]:
    return FEWSHOT_STOP if template == "fewshot" else ()
