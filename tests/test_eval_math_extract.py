"""Answer extraction (mm_unidpo.evaluation.math.extract) and gold answers of the real benchmark files."""

from __future__ import annotations

from pathlib import Path

import pytest

from mm_unidpo.evaluation.math import BENCHMARKS, extract_answer, gold_answer, load_benchmark
from mm_unidpo.evaluation.math.benchmarks import build_prompt, fewshot_prefix, read_json_records
from mm_unidpo.evaluation.math.extract import find_boxed

MATH_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "math"
FILES = {b: MATH_DATA / f"{b}_test.jsonl" for b in BENCHMARKS}
EXPECTED_RECORDS = {"gsm8k": 1319, "math500": 500, "aime24": 30, "amc23": 40, "minerva_math": 272}


def _need_data(benchmark: str) -> Path:
    path = FILES[benchmark]
    if not path.is_file():
        pytest.skip(f"shared math data not found at {path} (expected ../shared/data/math beside the repo)")
    return path


# (completion, benchmark, expected answer) -- expected values written by hand.
EXTRACTION = [
    # \boxed: the last non-empty one, brace matched
    ("So the answer is $\\boxed{\\frac{1}{2}}$.", "math500", "\\frac{1}{2}"),
    ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "math500", "\\left( 3, \\frac{\\pi}{2} \\right)"),
    ("First \\boxed{1}, then after checking, \\boxed{2}.", "math500", "2"),
    ("\\boxed{\\begin{pmatrix} -2 \\\\ -14 \\\\ -7 \\end{pmatrix}}", "math500",
     "\\begin{pmatrix} -2 \\\\ -14 \\\\ -7 \\end{pmatrix}"),
    ("\\boxed{\\{1\\pm\\sqrt{5},-2\\}}", "math500", "\\{1\\pm\\sqrt{5},-2\\}"),  # escaped braces do not count
    ("\\boxed{\\text{(C)}}", "math500", "\\text{(C)}"),
    ("\\fbox{7}", "math500", "7"),
    ("thus \\boxed 5.", "math500", "5"),
    # the instruction's empty box is ignored
    ("I must put the answer within \\boxed{}. The answer is 12.", "math500", "12"),
    ("$s=\\frac{45}{3600} 7200=\\boxed{1.6} \\mathrm{~cm}$", "minerva_math", "1.6"),
    ("so $L=\\boxed{4.5e33} \\mathrm{ergs}$", "minerva_math", "4.5e33"),
    # GSM8K's #### line
    ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72", "gsm8k", "72"),
    ("He pays 1,000 + 450 = 1,450.\n#### 1,450", "gsm8k", "1,450"),
    # "the answer is" / "final answer is"
    ("The answer is $\\frac{3}{4}$.", "math500", "\\frac{3}{4}"),
    ("Therefore, the final answer is: 3.5.", "math500", "3.5"),
    ("The answer is \\(2\\sqrt{3}\\).", "math500", "2\\sqrt{3}"),
    ("the answer is 5\n\nQuestion: something else with 7", "math500", "5"),
    ("Final Answer: The final answer is $\\boxed{5}$. I hope it is correct.", "math500", "5"),
    # integer benchmarks: a wordy candidate is reduced to its number
    ("The answer is 18 dollars.", "gsm8k", "18"),
    ("\\boxed{18 \\text{ dollars}}", "gsm8k", "18"),
    ("\\boxed{\\$18.00}", "gsm8k", "18.00"),
    ("The answer is 073.", "aime24", "073"),
    # last number
    ("She makes $18 every day.", "gsm8k", "18"),
    ("It costs $1,250 in total", "gsm8k", "1,250"),
    ("16-3-4=9 eggs", "gsm8k", "9"),  # 16-3: subtraction, not -3
    ("x = -3 and y = -4.5", "math500", "-4.5"),
    ("No numbers here.", "math500", None),
    ("", "gsm8k", None),
]


@pytest.mark.parametrize("text,benchmark,expected", EXTRACTION)
def test_extract_answer(text, benchmark, expected):
    assert extract_answer(text, benchmark) == expected


def test_unbalanced_box_is_skipped_and_unknown_benchmark_raises():
    assert find_boxed("\\boxed{1} and a cut-off \\boxed{\\frac{1}{2") == ["1"]
    with pytest.raises(ValueError, match="unknown benchmark"):
        extract_answer("\\boxed{1}", "math")


def test_gold_answer_rules():
    assert gold_answer({"question": "q", "answer": "so 2+2=4\n#### 1,450,000"}, "gsm8k") == "1,450,000"
    assert gold_answer({"problem": "q", "answer": 27.0}, "amc23") == "27"
    assert gold_answer({"problem": "q", "answer": "073"}, "aime24") == "73"
    record = {"problem": "q", "answer": "\\frac{14}{3}", "solution": "\\boxed{x}"}
    assert gold_answer(record, "math500") == "\\frac{14}{3}"
    assert gold_answer({"problem": "q", "solution": "so $\\boxed{3e6}$ and \\boxed{0.5} m"}, "minerva_math") == "0.5"
    with pytest.raises(ValueError, match="no gold answer"):
        gold_answer({"problem": "q", "solution": "nothing boxed"}, "minerva_math")


@pytest.mark.parametrize("benchmark", BENCHMARKS)
def test_gold_extraction_on_every_record(benchmark):
    records = read_json_records(_need_data(benchmark))
    assert len(records) == EXPECTED_RECORDS[benchmark]
    golds = [gold_answer(r, benchmark) for r in records]  # raises on a record without one
    assert all(golds)
    items = load_benchmark(benchmark, data_dir=MATH_DATA, limit=5)
    assert [it.gold for it in items] == golds[:5] and all(it.question for it in items)


def test_real_gold_values():
    for b in ("gsm8k", "math500", "aime24", "amc23", "minerva_math"):
        _need_data(b)
    first = {b: load_benchmark(b, data_dir=MATH_DATA, limit=2) for b in BENCHMARKS}
    assert [it.gold for it in first["gsm8k"]] == ["18", "3"]
    assert first["math500"][0].gold == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert first["math500"][0].meta == {"level": 2, "subject": "Precalculus"}
    assert first["math500"][0].uid == "test/precalculus/807.json"
    assert first["amc23"][0].gold == "27"  # stored as 27.0
    assert [it.gold for it in first["minerva_math"]] == ["1.6", "4.5e33"]  # last \boxed of the solution
    # MATH-500's answer field agrees with the last \boxed of its solution for every record
    from mm_unidpo.evaluation.math import is_equivalent

    for record in read_json_records(FILES["math500"]):
        assert is_equivalent(extract_answer(record["solution"], "math500"), record["answer"]), record["unique_id"]


def test_prompt_templates():
    from mm_unidpo.testing import tiny_tokenizer

    tok = tiny_tokenizer("llama3")
    prompt, add_special = build_prompt("What is 2+2?", "cot", tok)
    assert add_special is False and prompt.startswith(tok.bos_token)
    assert "What is 2+2?\nPlease reason step by step, and put your final answer within \\boxed{}." in prompt
    assert prompt.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    prompt, add_special = build_prompt("What is 2+2?", "fewshot", num_shots=2)
    assert add_special is True and prompt.endswith("Question: What is 2+2?\nAnswer:")
    assert prompt.count("Question: ") == 3 and fewshot_prefix(2).count("The answer is") == 2
    with pytest.raises(ValueError, match="chat template"):
        build_prompt("q", "cot", None)
