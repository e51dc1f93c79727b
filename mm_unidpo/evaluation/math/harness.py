"""The math evaluation loop: prompts -> generations (resumable JSON lines) -> grading -> scores.

    mm-unidpo eval math --model Qwen/Qwen2.5-Math-1.5B-Instruct --benchmarks gsm8k,math500 \\
        --data-dir data/math --output-dir runs/eval_math

Output folder:

* ``<benchmark>.generations.jsonl`` -- one graded record per question, appended and flushed after each
  batch. A rerun with the same settings skips the questions already there, so a crashed run continues
  where it stopped (a half-written last line is dropped first). Other settings in the same folder are
  refused (``run_config.json``) unless ``--overwrite``.
* ``results.json`` and ``results.md`` -- accuracy per benchmark (pass@k and maj@n when n > 1), MATH-500
  also by level and subject.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mm_unidpo.cli_args import HelpFormatter
from mm_unidpo.errors import UsageError
from mm_unidpo.io import append_jsonl, write_jsonl
from mm_unidpo.model_source import check_model_source

from .benchmarks import (
    FEWSHOT_EXAMPLES,
    TEMPLATES,
    MathItem,
    build_prompt,
    check_benchmark,
    check_limit,
    load_benchmark,
    stop_strings,
)
from .extract import BENCHMARKS, extract_answer
from .generate import HFGenerator, SamplingConfig, VLLMGenerator
from .metrics import majority_vote, markdown_report, summarize
from .worker import GRADING_TIMEOUT_S, GradingWorker

logger = logging.getLogger(__name__)

# Settings that change the generations: a resumed run must use the same ones.
GENERATION_KEYS = ("model", "adapter", "template", "num_shots", "n", "temperature", "top_p", "max_new_tokens", "seed")
BREAKDOWNS = {"math500": ("level", "subject")}


@dataclass
class MathEvalConfig:
    """Settings of one evaluation run (the CLI flags of ``mm-unidpo eval math``)."""

    benchmarks: tuple[str, ...] = ("gsm8k", "math500")
    output_dir: str = "runs/eval_math"
    data: dict[str, str] = field(default_factory=dict)  # benchmark -> local file or hub id
    data_dir: str | None = None  # folder with <benchmark>_test.jsonl files
    split: str | None = None
    limit: int | None = None
    template: str = "cot"
    num_shots: int = len(FEWSHOT_EXAMPLES)
    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 1024
    batch_size: int = 8
    seed: int = 0
    backend: str = "hf"
    grading_timeout: float = GRADING_TIMEOUT_S
    overwrite: bool = False
    regrade: bool = False
    progress: bool | None = None  # tqdm bars: None = only on a terminal

    def __post_init__(self) -> None:
        self.benchmarks = tuple(check_benchmark(b) for b in self.benchmarks)
        if self.template not in TEMPLATES:
            raise ValueError(f"unknown template {self.template!r}; expected one of {TEMPLATES}")
        if self.backend not in ("hf", "vllm"):
            raise ValueError(f"unknown backend {self.backend!r}; expected 'hf' or 'vllm'")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        check_limit(self.limit)
        for name in self.data:
            check_benchmark(name)
        self.sampling  # noqa: B018 -- validates n / temperature now rather than after model loading

    @property
    def sampling(self) -> SamplingConfig:
        return SamplingConfig(self.n, self.temperature, self.top_p, self.max_new_tokens)


def generations_path(output_dir: str | os.PathLike, benchmark: str) -> Path:
    return Path(output_dir) / f"{benchmark}.generations.jsonl"


def read_done(path: Path, items: Sequence[MathItem]) -> dict[int, dict[str, Any]]:
    """Records already generated, by item index. A half-written line (crash mid-write) is dropped and
    the file rewritten without it, so appending continues on a clean line."""
    if not path.exists():
        return {}
    raw = path.read_bytes()
    done: dict[int, dict[str, Any]] = {}
    dropped = 0
    for line in raw.split(b"\n"):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            done[int(record["idx"])] = record
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            dropped += 1
    for idx, record in done.items():
        if idx < len(items) and record.get("uid") != items[idx].uid:
            raise ValueError(
                f"{path}: item {idx} was {record.get('uid')!r}, the data now has {items[idx].uid!r}; "
                "the benchmark file changed -- use a new --output-dir or --overwrite"
            )
    if dropped or (raw and not raw.endswith(b"\n")):
        logger.warning("%s: dropped %d unreadable line(s) left by an interrupted run", path, dropped)
        write_jsonl(path, sorted(done.values(), key=lambda r: r["idx"]))
    return done


def grade_completions(completions: Sequence[str], gold: str, benchmark: str, grader: GradingWorker) -> dict[str, Any]:
    """Extracted answers, their correctness, and (n > 1) the majority vote."""
    predictions = [extract_answer(c, benchmark) for c in completions]
    correct = [grader.equivalent(p, gold) for p in predictions]
    graded: dict[str, Any] = {"predictions": predictions, "correct": correct}
    if len(completions) > 1:
        answer, ok = majority_vote(predictions, correct, grader.equivalent)
        graded["majority"] = {"answer": answer, "correct": ok}
    return graded


def make_record(
    item: MathItem, prompt: str, completions: Sequence[str], benchmark: str, grader: GradingWorker
) -> dict[str, Any]:
    return {
        "idx": item.idx,
        "uid": item.uid,
        "question": item.question,
        "gold": item.gold,
        "meta": item.meta,
        "prompt": prompt,
        "completions": list(completions),
        **grade_completions(completions, item.gold, benchmark, grader),
    }


def run_benchmark(
    generator: Any, items: Sequence[MathItem], benchmark: str, config: MathEvalConfig, grader: GradingWorker
) -> list[dict[str, Any]]:
    """Generate and grade the items not yet in the generations file; all records, in item order."""
    from tqdm.auto import tqdm

    path = generations_path(config.output_dir, benchmark)
    done = read_done(path, items)
    if config.regrade and done:
        for idx, record in done.items():
            if idx < len(items):
                record["gold"] = items[idx].gold  # the gold rules may have changed too
            record.update(grade_completions(record["completions"], record["gold"], benchmark, grader))
        write_jsonl(path, sorted(done.values(), key=lambda r: r["idx"]))
    todo = [item for item in items if item.idx not in done]
    prompts = {
        it.idx: build_prompt(it.question, config.template, generator.tokenizer, num_shots=config.num_shots)
        for it in todo
    }
    # Longest first: similar lengths share a batch (less padding) and an out-of-memory shows up early.
    todo.sort(key=lambda it: -len(prompts[it.idx][0]))
    if len(todo) < len(items):
        logger.info(
            "%s: %d of %d items already done, generating %d", benchmark, len(items) - len(todo), len(items), len(todo)
        )
    disable = None if config.progress is None else not config.progress
    with tqdm(total=len(items), initial=len(items) - len(todo), desc=benchmark, unit="q", disable=disable) as bar:
        for start in range(0, len(todo), config.batch_size):
            chunk = todo[start : start + config.batch_size]
            outputs = generator.generate(
                [prompts[it.idx][0] for it in chunk],
                add_special_tokens=prompts[chunk[0].idx][1],
                sampling=config.sampling,
                stop=stop_strings(config.template),
                seed=config.seed + start,
            )
            records = [
                make_record(item, prompts[item.idx][0], completions, benchmark, grader)
                for item, completions in zip(chunk, outputs)
            ]
            append_jsonl(path, records)  # durable before the next batch: a killed run resumes here
            done.update((item.idx, record) for item, record in zip(chunk, records))
            bar.update(len(chunk))
    return [done[item.idx] for item in items]


def _model_id(model: Any) -> str:
    if isinstance(model, str):
        return model
    return getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__


def make_generator(
    model: Any, tokenizer: Any, config: MathEvalConfig, *, adapter: str | None = None, dtype: str = "auto"
) -> HFGenerator | VLLMGenerator:
    """A generator for a loaded (model, tokenizer) pair or a model path / hub id."""
    if not isinstance(model, str):
        if config.backend == "vllm":
            raise ValueError("the vllm backend needs a model path or hub id, not a loaded model")
        if tokenizer is None:
            raise ValueError("a loaded model needs its tokenizer")
        return HFGenerator(model, getattr(tokenizer, "tokenizer", tokenizer))
    if config.backend == "vllm":
        return VLLMGenerator(model, adapter=adapter, dtype=dtype, seed=config.seed)
    import torch

    # lazy: torch and transformers; the spawned grading workers import this package and must start fast
    from mm_unidpo.models.loading import load_pretrained

    gpu = torch.cuda.is_available()  # "auto" is float32 without one (load_pretrained)
    loaded, processor = load_pretrained(
        model, family="causal_lm", adapter=adapter, dtype=dtype, device_map="auto" if gpu else None
    )
    return HFGenerator(loaded, getattr(processor, "tokenizer", processor))


def _check_run_config(output_dir: Path, run_config: dict[str, Any], config: MathEvalConfig) -> None:
    path = output_dir / "run_config.json"
    if config.overwrite:
        for bench in BENCHMARKS:
            generations_path(output_dir, bench).unlink(missing_ok=True)
    elif path.exists():
        old = json.loads(path.read_text(encoding="utf-8"))
        diff = {k: (old.get(k), run_config[k]) for k in GENERATION_KEYS if old.get(k) != run_config[k]}
        if diff:
            raise ValueError(
                f"{output_dir} holds generations made with other settings {diff} (old, new); "
                "use another --output-dir or --overwrite"
            )
    path.write_text(json.dumps(run_config, indent=2) + "\n", encoding="utf-8")


def evaluate_math(
    model: Any,
    tokenizer: Any = None,
    config: MathEvalConfig | None = None,
    *,
    adapter: str | None = None,
    dtype: str = "auto",
    **overrides: Any,
) -> dict[str, Any]:
    """Evaluate ``model`` (a loaded model with ``tokenizer``, or a path / hub id) on the math benchmarks.

    Keyword ``overrides`` replace fields of ``config``. Returns the results also written to
    ``results.json`` (and ``results.md``) in ``config.output_dir``.
    """
    config = dataclasses.replace(config or MathEvalConfig(), **overrides)
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Data first: a missing file should fail before minutes of model loading.
    items = {
        b: load_benchmark(b, config.data.get(b), split=config.split, data_dir=config.data_dir, limit=config.limit)
        for b in config.benchmarks
    }
    run_config = {
        "model": _model_id(model),
        "adapter": adapter,
        **{k: getattr(config, k) for k in GENERATION_KEYS if k not in ("model", "adapter")},
    }
    _check_run_config(out, run_config, config)
    questions = sum(len(v) for v in items.values())
    budget = questions * config.n * config.max_new_tokens
    logger.info(
        "token budget: %d questions x n %d x max_new_tokens %d = at most %d new tokens (answers stop earlier at "
        "their stop strings; --limit and --max-new-tokens scale it)",
        questions,
        config.n,
        config.max_new_tokens,
        budget,
    )
    generator = make_generator(model, tokenizer, config, adapter=adapter, dtype=dtype)
    results: dict[str, Any] = {
        "config": {**run_config, "benchmarks": list(config.benchmarks), "limit": config.limit},
        "token_budget": budget,
        "benchmarks": {},
    }
    with GradingWorker(config.grading_timeout) as grader:
        for bench, bench_items in items.items():
            records = run_benchmark(generator, bench_items, bench, config, grader)
            results["benchmarks"][bench] = summarize(records, BREAKDOWNS.get(bench, ()))
        results["grading_timeouts"] = grader.timeouts
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (out / "results.md").write_text(markdown_report(results), encoding="utf-8")
    return results


def build_parser() -> argparse.ArgumentParser:
    d = MathEvalConfig()
    p = argparse.ArgumentParser(prog="mm-unidpo eval math", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--model", required=True, help="model path or hub id (causal LM)")
    p.add_argument("--adapter", help="LoRA adapter folder to put on top of the model")
    p.add_argument(
        "--benchmarks", default=",".join(d.benchmarks), help=f"comma-separated, or 'all' ({','.join(BENCHMARKS)})"
    )
    p.add_argument("--data-dir", help="folder with <benchmark>_test.jsonl files (else the hub)")
    p.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="NAME=SOURCE",
        help="a local JSON(L) file or hub id for one benchmark (repeatable)",
    )
    p.add_argument("--split", help="hub split (default: each benchmark's test split)")
    p.add_argument(
        "--limit",
        type=int,
        help="the first N questions of EACH benchmark (not in total); only they are prompted, generated "
        "and graded: time is a fixed start-up + N x per-question (see the README)",
    )
    p.add_argument("--out", "--output-dir", dest="output_dir", default=d.output_dir, help="results folder")
    p.add_argument(
        "--template",
        choices=TEMPLATES,
        default=d.template,
        help="cot: Qwen2.5-Math CoT instruction in the chat template; fewshot: plain text for base models",
    )
    p.add_argument("--num-shots", type=int, default=d.num_shots)
    p.add_argument("--n", type=int, default=d.n, help="samples per question (>1: pass@k and maj@n)")
    p.add_argument("--temperature", type=float, default=d.temperature, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=d.top_p)
    p.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens)
    p.add_argument(
        "--batch-size",
        type=int,
        default=d.batch_size,
        help="questions per generate call (n sequences each) and per flush to disk",
    )
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--backend", choices=("hf", "vllm"), default=d.backend)
    p.add_argument(
        "--dtype", default="auto", help="auto (the checkpoint's on a GPU, float32 on CPU), bfloat16, float16 or float32"
    )
    p.add_argument("--grading-timeout", type=float, default=d.grading_timeout, help="seconds per answer check")
    p.add_argument("--overwrite", action="store_true", help="discard generations already in --output-dir")
    p.add_argument("--regrade", action="store_true", help="re-extract and re-grade stored generations")
    return p


def main(argv: list[str] | None = None) -> int:
    """``mm-unidpo eval math ...``: evaluate, write the results, print the markdown table."""
    args = build_parser().parse_args(argv)
    check_model_source(args.model)  # a typo fails before torch and transformers are imported
    names = args.benchmarks.split(",")
    benchmarks = BENCHMARKS if args.benchmarks == "all" else tuple(b.strip() for b in names if b.strip())
    data = {}
    for spec in args.data:
        name, sep, source = spec.partition("=")
        if not sep:
            raise UsageError(f"--data expects NAME=SOURCE, got {spec!r}")
        data[check_benchmark(name)] = source
    config = MathEvalConfig(
        benchmarks=benchmarks,
        output_dir=args.output_dir,
        data=data,
        data_dir=args.data_dir,
        split=args.split,
        limit=args.limit,
        template=args.template,
        num_shots=args.num_shots,
        n=args.n,
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        seed=args.seed,
        backend=args.backend,
        grading_timeout=args.grading_timeout,
        overwrite=args.overwrite,
        regrade=args.regrade,
    )
    results = evaluate_math(args.model, config=config, adapter=args.adapter, dtype=args.dtype)
    print(markdown_report(results), end="")
    print(f"results: {Path(config.output_dir) / 'results.json'}")
    return 0
