"""Answer equivalence (mm_unidpo.evaluation.math.grade): a hand-written table drawn from the answer styles
of the shared benchmark files, the math-verify false-positive guards, metrics and the timeout worker."""

from __future__ import annotations

from fractions import Fraction

import pytest

from mm_unidpo.evaluation.math import GradingWorker, is_equivalent, majority_vote, normalize_answer, pass_at_k
from mm_unidpo.evaluation.math.numeric import parse_number
from mm_unidpo.evaluation.math.metrics import k_values, summarize

# (prediction, gold) pairs that must be judged EQUAL. Expected values written by hand.
EQUAL = [
    # fractions: \frac, \dfrac, \tfrac, brace-less \frac43, a/b, decimals, mixed numbers (MATH-500 styles)
    ("14/3", "\\frac{14}{3}"),
    ("\\dfrac{14}{3}", "\\frac{14}{3}"),
    ("\\tfrac{3}{56}", "\\frac{3}{56}"),
    ("\\frac{4}{3}", "\\frac43"),
    ("5/9", "\\frac 59"),
    ("\\frac{9}{19}", "\\frac9{19}"),
    ("0.34", "\\dfrac{17}{50}"),
    ("1.8", "1\\frac{4}{5}"),
    ("275/2", "137 \\frac{1}{2}"),
    ("0.5", "\\frac{1}{2}"),
    # radicals and pi
    ("11\\sqrt{2}", "11\\sqrt2"),
    ("\\sqrt{18}", "3\\sqrt{2}"),
    ("\\frac{1}{\\sqrt{3}}", "\\frac{\\sqrt{3}}{3}"),
    ("\\frac{3}{4}\\sqrt{3}", "\\frac{3\\sqrt{3}}{4}"),
    ("2\\pi + 18", "18+2\\pi"),
    ("20000/\\pi", "\\frac{20000}{\\pi}"),
    ("3.14159", "\\pi"),  # a decimal within 1e-4 of an exact constant counts (Qwen2.5-Math convention)
    # tuples, intervals, unions, sets
    ("(3, \\frac{\\pi}{2})", "\\left( 3, \\frac{\\pi}{2} \\right)"),
    ("(3/2,-13)", "\\left( \\frac{3}{2}, -13 \\right)"),
    ("\\frac32, -13", "\\left( \\frac{3}{2}, -13 \\right)"),  # parentheses left out, order kept
    ("1,-16,-4,43", "(1,-16,-4,43)"),
    ("(2, \\infty)", "(2,\\infty)"),
    ("(-\\infty,0]", "(-\\infty, 0]"),
    ("(3,\\infty)\\cup(-\\infty,2)", "(-\\infty, 2) \\cup (3, \\infty)"),
    ("[\\pi^2/8, 5\\pi^2/4]", "\\left[ \\frac{\\pi^2}{8}, \\frac{5 \\pi^2}{4} \\right]"),
    ("[-2,7]", "x \\in [-2,7]"),
    ("-2,1", "1,-2"),  # "enter all solutions": unordered
    ("7, 5, 3", "3, 5, 7"),
    ("1-\\sqrt{19}, 1+\\sqrt{19}", "1 \\pm \\sqrt{19}"),
    ("\\{-2, 1+\\sqrt{5}, 1-\\sqrt{5}\\}", "\\{1\\pm\\sqrt{5},-2\\}"),
    ("19, 46, 82", "19, 46, \\text{ and } 82"),
    # degrees, percent, units, currency, thousands separators
    ("90", "90^\\circ"),
    ("145", "145^{\\circ}"),
    ("\\frac{270}{7}", "\\frac{270}7\\text{ degrees}"),
    ("50", "50\\%"),
    ("864", "864 \\mbox{ inches}^2"),
    ("5.4", "5.4 \\text{ cents}"),
    ("15", "15\\mbox{ cm}^2"),
    ("1.6", "1.6 \\mathrm{~cm}"),
    ("10080", "10,\\!080"),
    ("11,111,111,100", "11,\\! 111,\\! 111,\\! 100"),
    ("32348", "\\$32,\\!348"),
    ("18.90", "\\$18.90"),
    ("58500", "58,500"),
    ("1450000", "1,450,000"),
    ("10000", "10\\,000"),
    ("\\frac{1}{2}", "\\frac{1}{2} \\text{ cups}"),
    ("3.14", "\\approx 3.14"),
    # text answers and multiple choice
    ("Evelyn", "\\text{Evelyn}"),
    ("\\text{East}", "\\text{east}"),
    ("C", "\\text{(C)}"),
    ("(E)", "\\text{(E)}"),
    # complex numbers, polynomials, expressions
    ("6-5i", "6 - 5i"),
    ("274i+1", "1+274i"),
    ("-1 + x - x^2 + x^3 - x^4 + x^5", "x^5 - x^4 + x^3 - x^2 + x - 1"),
    ("(b+2)(a+5)", "(a+5)(b+2)"),
    ("\\frac{9a+11}{20}", "\\frac{11+9a}{20}"),
    ("\\frac{\\cos x}{\\sin x}", "\\cot x"),
    ("1/(s+a)", "\\frac{1}{s+a}"),
    ("-5x+7y-11z-4=0", "5x - 7y + 11z + 4 = 0"),
    # assignments (decision: a single-variable left side is dropped), bases, matrices
    ("5", "x=5"),
    ("2x+3", "y = 2x + 3"),
    ("52", "52_8"),
    ("\\begin{pmatrix} -1/3 \\\\ 2/3 \\\\ 5/3 \\end{pmatrix}",
     "\\begin{pmatrix} -\\frac{1}{3} \\\\ \\frac{2}{3} \\\\ \\frac{5}{3} \\end{pmatrix}"),
    # integer / decimal / scientific styles of GSM8K, AIME, AMC, Minerva
    ("18.00", "18"),
    ("-3.0", "-3"),
    ("73", "073"),
    ("27", "27.0"),
    ("4.5\\times 10^{33}", "4.5e33"),
    ("6.72\\times10^{-5}", ".0000672"),
    ("-0.33333", "-1./3"),
]

# (prediction, gold) pairs that must be judged NOT equal.
NOT_EQUAL = [
    # a bare number never equals a different constant or an expression (G1/G2)
    ("4", "4\\sqrt{2}"),
    ("4\\sqrt{2}", "4"),
    ("3", "3\\sqrt{13}"),
    ("288", "288 \\pi"),
    ("2", "2i"),
    ("5", "5r^5"),
    ("3", "3R^2"),
    ("18", "18+2\\pi"),
    ("\\sqrt{2}", "2"),
    ("1.41", "\\sqrt{2}"),  # outside the 1e-4 tolerance
    # numbers
    ("1/2", "2"),
    ("2", "-2"),
    ("\\frac{\\pi}{6}", "-\\frac{\\pi}{6}"),
    ("0.6", "\\frac{3}{56}"),
    ("\\frac{1}{3}", "0.3"),
    ("1000001", "1000000"),  # integers compare exactly
    ("1,000", "100"),
    ("10", "10,\\!080"),
    ("0.35", "0.15"),
    ("12.1", "12"),
    ("0", "0.0001"),
    ("42", "52_8"),
    # decisions: percent and degrees are dropped, not converted
    ("0.5", "50\\%"),
    ("\\frac{\\pi}{2}", "90^\\circ"),
    # tuples keep their order, intervals their brackets, sets are not tuples (G6)
    ("(2,1)", "(1,2)"),
    ("(1,2)", "\\{1,2\\}"),
    ("2,1", "(1,2)"),
    ("-13, \\frac32", "\\left( \\frac{3}{2}, -13 \\right)"),
    ("\\{1,2\\}", "(1,2)"),
    ("[0,1]", "[0,1)"),
    ("(3,4)", "(3,4]"),
    ("(-\\infty,0)", "(-\\infty, 0]"),
    ("(6,31,1)", "(6,31,-1)"),
    ("(0,36)", "(0,9) \\cup (9,36)"),
    ("-2", "-2,1"),
    ("2021", "\\pm 2021"),
    ("1+\\sqrt{19}", "1 \\pm \\sqrt{19}"),
    # matrices
    ("\\begin{pmatrix} -1 & 0 \\\\ 0 & 1 \\end{pmatrix}", "\\begin{pmatrix} -1 & 0 \\\\ 0 & -1 \\end{pmatrix}"),
    # text and choices
    ("\\text{west}", "\\text{east}"),
    ("(B)", "\\text{(C)}"),
    ("Evelyn", "\\text{Navin}"),
    ("\\text{odd}", "\\text{even}"),
    # expressions
    ("6+5i", "6 - 5i"),
    ("q - p", "p - q"),
    ("(a+2)(b+5)", "(a+5)(b+2)"),
    ("\\tan x", "\\cot x"),
    ("x^3+3x+6", "x^3+3x-6"),
    ("2k+2", "2k"),
    ("x=6", "x=5"),
    # math-verify false positives (G3 rounding, G4 truncated parse, G5 e-notation)
    ("\\frac{1}{2^{98}}", "\\frac{1}{2^{99}}"),
    ("\\frac{1}{2006!}", "\\frac{1}{2004!}"),
    ("2^{100}+1", "2^{100}"),
    ("1 + \\frac{1}{\\mathrm{e}}", "1 - \\frac{1}{\\mathrm{e}}"),
    ("1 + \\frac{1}{\\operatorname{e}}", "1 - \\frac{1}{\\operatorname{e}}"),
    ("4.6e33", "4.5e33"),
    ("4.5", "4.5e33"),
    # nothing extracted
    ("", "5"),
    (None, "5"),
]


def test_table_size():
    assert len(EQUAL) + len(NOT_EQUAL) >= 60 and len(NOT_EQUAL) >= 30


@pytest.mark.parametrize("prediction,gold", EQUAL)
def test_equal(prediction, gold):
    assert is_equivalent(prediction, gold) is True


@pytest.mark.parametrize("prediction,gold", NOT_EQUAL)
def test_not_equal(prediction, gold):
    assert is_equivalent(prediction, gold) is False


def test_math_verify_false_positives_exist_without_guards():
    """The guarded cases really fool math-verify 0.9.0 on its own (so the guards are not dead code)."""
    import logging

    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)

    def raw(gold: str, pred: str, wrap: bool = True) -> bool:
        g, p = (f"${s}$" if wrap else s for s in (gold, pred))
        return verify(parse(g, parsing_timeout=None), parse(p, parsing_timeout=None), timeout_seconds=None)

    assert raw("4\\sqrt{2}", "4", wrap=False)  # G1
    assert raw("\\frac{1}{2^{99}}", "\\frac{1}{2^{98}}")  # G3
    assert raw("1 - \\frac{1}{\\operatorname{e}}", "1 + \\frac{1}{\\operatorname{e}}")  # G4
    assert raw("(1,2)", "\\{1,2\\}") and raw("\\{1,2\\}", "(1,2)")  # G6
    assert not raw("(1,2)", "2,1")  # order is respected
    assert not raw("4.5e33", "4.5\\times10^{33}")  # G5: e-notation read as Euler's number


def test_normalize_and_parse_number():
    assert normalize_answer("\\$32,\\!348") == "32,348"
    assert normalize_answer("\\left( 3, \\frac{\\pi}{2} \\right)") == "( 3, \\frac{\\pi}{2} )"
    assert normalize_answer("x \\in [-2,7]") == "[-2,7]"
    assert normalize_answer("864 \\mbox{ inches}^2") == "864"
    assert normalize_answer("\\text{Evelyn}") == "Evelyn"
    assert parse_number("1,450,000") == (1450000, True)
    assert parse_number("-\\frac{3}{8}") == (-0.375, True)
    assert parse_number("1\\frac{4}{5}")[0] * 5 == 9
    assert parse_number("4.5e33") == (Fraction(45) * 10**32, False)
    assert parse_number("3\\sqrt{2}") is None and parse_number("1, 2") is None


def test_pass_at_k_and_majority():
    assert pass_at_k(5, 0, 1) == 0.0 and pass_at_k(5, 5, 3) == 1.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - 21 / 252)  # 1 - C(7,5)/C(10,5)
    assert k_values(8) == [1, 2, 4, 8] and k_values(6) == [1, 2, 4, 6] and k_values(1) == [1]
    # 0.5 and \frac{1}{2} vote together (3 votes) and beat "2" (2 votes); None does not vote
    preds = ["2", "0.5", None, "\\frac{1}{2}", "2", "\\dfrac12"]
    correct = [False, True, False, True, False, True]
    assert majority_vote(preds, correct, is_equivalent) == ("0.5", True)
    assert majority_vote([None, None], [False, False], is_equivalent) == (None, False)
    assert majority_vote(["3", "4"], [False, True], is_equivalent) == ("3", False)  # tie: first seen


def test_summarize_breakdowns():
    records = [
        {"correct": [True, False], "predictions": ["1", "2"], "majority": {"correct": True}, "meta": {"level": 1}},
        {"correct": [False, False], "predictions": [None, "3"], "majority": {"correct": False}, "meta": {"level": 2}},
    ]
    s = summarize(records, ("level", "subject"))
    assert s["items"] == 2 and s["samples_per_item"] == 2
    assert s["accuracy"] == pytest.approx(0.25) and s["no_answer_rate"] == pytest.approx(0.25)
    assert s["pass@k"] == {"pass@1": pytest.approx(0.25), "pass@2": pytest.approx(0.5)} and s["maj@2"] == 0.5
    assert s["by_level"] == {"1": {"items": 1, "accuracy": 0.5}, "2": {"items": 1, "accuracy": 0.0}}
    assert "by_subject" not in s


def test_grading_worker_timeout_and_restart():
    with GradingWorker(timeout=0.001) as worker:
        # rules 1-3 are decided in the parent without the child
        assert worker.equivalent("10,\\!080", "10080") and worker._proc is None
        # the first symbolic check (sympy's LaTeX grammar loads lazily) cannot finish in 1 ms
        assert worker.equivalent("\\sqrt{8}", "2\\sqrt{2}") is False and worker.timeouts == 1
        worker.timeout = 60.0  # the child was killed; the next call starts a new one
        assert worker.equivalent("\\sqrt{8}", "2\\sqrt{2}") is True
        assert worker.equivalent("\\sqrt{8}", "3\\sqrt{2}") is False and worker.timeouts == 1
