"""Math-reasoning evaluation: GSM8K, MATH-500, AIME24, AMC23 and Minerva Math.

    from mm_unidpo.evaluation.math import evaluate_math, extract_answer, is_equivalent

    extract_answer("... so the answer is \\boxed{\\frac{1}{2}}.", "math500")  # '\\frac{1}{2}'
    is_equivalent("0.5", "\\frac{1}{2}")                                     # True (prediction, gold)
    evaluate_math("Qwen/Qwen2.5-Math-1.5B-Instruct", benchmarks=("gsm8k",), data_dir="data/math")

Modules: :mod:`.extract` (answer extraction), :mod:`.grade` (equivalence: normalisation, numbers,
math-verify with false-positive guards), :mod:`.worker` (grading in a process with a timeout),
:mod:`.benchmarks` (data, gold answers, prompt templates), :mod:`.generate` (transformers / vLLM
backends), :mod:`.metrics` (accuracy, pass@k, maj@n, report) and :mod:`.harness` (the resumable loop
and the CLI, ``main``).
Importing this package does not import torch, transformers or sympy.
"""

from __future__ import annotations

from .benchmarks import HUB_SOURCES, MathItem, build_prompt, gold_answer, load_benchmark
from .extract import BENCHMARKS, extract_answer
from .grade import is_equivalent, normalize_answer
from .harness import MathEvalConfig, evaluate_math, main
from .metrics import majority_vote, pass_at_k
from .worker import GradingWorker

__all__ = [
    "BENCHMARKS",
    "HUB_SOURCES",
    "GradingWorker",
    "MathEvalConfig",
    "MathItem",
    "build_prompt",
    "evaluate_math",
    "extract_answer",
    "gold_answer",
    "is_equivalent",
    "load_benchmark",
    "main",
    "majority_vote",
    "normalize_answer",
    "pass_at_k",
]
