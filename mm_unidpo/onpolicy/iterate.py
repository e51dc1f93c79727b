"""`mm-unidpo iterate CONFIG.yaml --rounds N`: iterative on-policy alignment (RLAIF-V's rounds).

Each round samples from the model the previous round trained, judges the samples, pairs them, trains on
the pairs (`mm-unidpo train` with the config's `train` section) and evaluates; LoRA adapters are merged
into the round's starting model (`mm-unidpo merge`), which is also the round's reference, so round r+1
starts from — and is anchored to — round r's result. One report puts every round's metrics side by side.

    model: llava-hf/llava-1.5-7b-hf            # the starting policy (hub id or path)
    prompts: data/prompts.jsonl                # or a list: round r uses prompts[(r - 1) % len]
    image_root: data/images
    output_dir: runs/iterate
    rounds: 3
    generate: {n: 8, temperature: 1.0, max_new_tokens: 256, batch_size: 8}
    judge: {kind: vlm, model: llava-hf/llava-1.5-13b-hf}    # any judge and its options
    pairs: {strategy: best-worst, min_gap: 1.0}
    train:                                     # a train config (mm_unidpo.train.config); its base:
      base: ../configs/llava15_7b_qlora_unidpo_rlaifv.yaml  # relative to this file, other paths to the cwd
      train: {num_train_epochs: 1}
    evaluate: {prompts: data/heldout.jsonl}    # greedy on held-out prompts, scored by the same judge

Per round, under `output_dir/round-<r>/`: samples.jsonl, scored.jsonl, pairs.jsonl (+ summary),
train/ (the run), merged/ (the next policy), eval/ and round.json. Every step is resumable: a rerun skips
finished rounds and steps and continues an interrupted generate or judge where it stopped. The train
section's `model.name_or_path`, `data.train`, `data.format` (unidpo: the pairs are ours, whatever the
base pins), `train.output_dir` and `train.seed` are set per round. The whole config is checked before
round 1 (`check_before_round_one`).
Metrics: the on-policy mean score of each round's samples, the pairs (and prompts without one), the
training loss, and on the held-out prompts the mean score plus the mean of every numeric judge detail
(e.g. `correct` for the PRM with a benchmark: accuracy) — round 0 is the starting model. With
`evaluate.math` (fields of `MathEvalConfig`) the math harness runs as well.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mm_unidpo.cli_args import HelpFormatter
from mm_unidpo.evaluation.math import MathEvalConfig, evaluate_math
from mm_unidpo.train.config import TrainConfig, config_from_dict, merge_configs, read_config, training_arguments
from mm_unidpo.train.merge import merge_adapter
from mm_unidpo.train.run import train
from mm_unidpo.yaml_config import ConfigError, from_dict, read_yaml_file

from .generate import generate_samples
from .judge import judge_samples, judged_means
from .judges import Judge, judge_options, make_judge
from .pairs import PairConfig, build_pairs, format_summary, write_pairs
from .records import check_prompts, load_prompts, record_of
from .samplers import GenerateConfig, load_sampler
from .store import read_json, write_json

logger = logging.getLogger(__name__)


@dataclass
class JudgeSection:
    kind: str = "objects"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvaluateSection:
    prompts: str | None = None  # held-out prompts: generated (greedy by default) and judged each round
    n: int = 1
    temperature: float = 0.0
    max_new_tokens: int | None = None  # default: generate's
    math: dict[str, Any] | None = None  # MathEvalConfig fields: also run the math harness


@dataclass
class IterateConfig:
    model: str = ""
    family: str | None = None
    prompts: list[str] = field(default_factory=list)
    image_root: str | None = None
    format: str | None = None
    limit: int | None = None
    output_dir: str = "runs/iterate"
    rounds: int = 2
    seed: int = 0
    backend: str = "hf"
    dtype: str = "auto"
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    judge: JudgeSection = field(default_factory=JudgeSection)
    pairs: PairConfig = field(default_factory=PairConfig)
    train: dict[str, Any] = field(default_factory=dict)  # a train config mapping (its `base:` resolved)
    evaluate: EvaluateSection = field(default_factory=EvaluateSection)

    def train_config(
        self, policy: str, pairs: str, output_dir: str, round_: int, image_root: str | None = None
    ) -> TrainConfig:
        """The round's `TrainConfig`: the train section with this round's model, data (and the folder its
        image paths are relative to), output and seed."""
        raw = json.loads(json.dumps(self.train))
        raw.setdefault("model", {})["name_or_path"] = policy
        raw["model"].setdefault("family", self.family)
        # The pairs are ours (`save_preference_data` writes format unidpo), whatever format the base pinned.
        raw.setdefault("data", {}).update(train=pairs, format="unidpo")
        if image_root is not None:
            raw["data"]["image_root"] = image_root
        raw.setdefault("train", {}).update(output_dir=output_dir, seed=self.seed + round_)
        return config_from_dict(raw, source="iterate config, section train").validate()


def load_iterate_config(path: str | Path, **overrides: Any) -> IterateConfig:
    """An `IterateConfig` from YAML; every key and value is checked (`yaml_config.from_dict`: an unknown key or
    a wrongly typed value names the file and the key), the train section is resolved and validated now (with
    placeholder paths) so a bad config fails before round 1."""
    path = Path(path)
    raw = read_yaml_file(path, what="an iterate config")
    raw.update({k: v for k, v in overrides.items() if v is not None})
    judge = raw.get("judge")
    if isinstance(judge, dict):  # the judge's kind and, beside it, the judge's own options
        raw["judge"] = {
            "kind": judge.get("kind", "objects"),
            "options": {k: v for k, v in judge.items() if k != "kind"},
        }
    if isinstance(raw.get("prompts"), str):
        raw["prompts"] = [raw["prompts"]]
    if raw.get("train") is None:
        raw.pop("train", None)
    config = from_dict(IterateConfig, raw, source=str(path))
    train = dict(config.train)
    bases = train.pop("base", None) or []
    merged: dict[str, Any] = {}
    for base in [bases] if isinstance(bases, str) else bases:
        merged = merge_configs(merged, read_config(path.parent / base))
    config.train = merge_configs(merged, train)
    if not config.model or not config.prompts:
        raise ConfigError(f"{path}: 'model' and 'prompts' are required")
    if config.rounds < 1:
        raise ConfigError(f"{path}: rounds must be >= 1")
    check_before_round_one(config, str(path))
    return config


def check_before_round_one(config: IterateConfig, source: str) -> None:
    """Everything a round would find wrong only after hours of sampling: every prompts file (each round's
    and the held-out one) loads, the evaluate section builds, the train section gives valid training
    arguments on this machine (a bf16 run on a CPU-only one fails here), the judge's options fit it."""
    for prompts in dict.fromkeys([*config.prompts, *([config.evaluate.prompts] if config.evaluate.prompts else [])]):
        data = load_prompts(prompts, format=config.format, image_root=config.image_root, limit=config.limit)
        if not data.records:
            raise ConfigError(f"{source}: prompts {prompts}: no prompts ({data.skips.summary()})")
    e = config.evaluate
    dataclasses.replace(config.generate, n=e.n, temperature=e.temperature, logprobs=False)  # checks n vs temperature
    if e.math is not None:
        from_dict(MathEvalConfig, e.math, source=source, section="evaluate.math")
    judge_options(config.judge.kind)  # a known kind (its options are checked when it is built, before round 0)
    train_config = config.train_config(config.model, "pairs.jsonl", str(Path(config.output_dir) / "train"), 1)
    try:
        training_arguments(train_config)
    except (ValueError, ImportError) as error:
        raise ConfigError(f"{source}, section train: {error}") from None


# ---- one round ---------------------------------------------------------------------------------------


def _free() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def sample_and_judge(
    config: IterateConfig, policy: str, prompts: str, judge: Judge, folder: Path, generate: GenerateConfig
) -> tuple[list[dict[str, Any]], str]:
    """Generate from `policy` on `prompts` and judge: the scored lines (both steps resumable) and the folder
    their image paths resolve in."""
    data = load_prompts(prompts, format=config.format, image_root=config.image_root, limit=config.limit, decode=True)
    if not data.records:
        raise ValueError(f"{prompts}: no prompts ({data.skips.summary()})")
    sampler = load_sampler(policy, generate, backend=config.backend, family=config.family, dtype=config.dtype)
    data = check_prompts(data, sampler, generate)
    root = str(data.records[0].image_root)
    lines = generate_samples(
        data.records,
        sampler,
        generate,
        folder / "samples.jsonl",
        model_id=policy,
        desc=f"{folder.name}: generate",
        settings={
            "family": sampler.adapter.family,
            "backend": config.backend,
            "dtype": config.dtype,
            "image_root": root,
        },
        source=prompts,
    )
    del sampler
    _free()
    samples = [(line, record_of(line, f"{folder / 'samples.jsonl'}", root)) for line in lines]
    settings = {"judge": config.judge.kind, **config.judge.options, "image_root": root}
    scored = judge_samples(samples, judge, folder / "scored.jsonl", settings=settings, desc=f"{folder.name}: judge")
    return scored, root


def evaluate(config: IterateConfig, policy: str, judge: Judge, folder: Path) -> dict[str, Any]:
    """Held-out metrics of `policy` (see the module doc)."""
    metrics: dict[str, Any] = {}
    e = config.evaluate
    if e.prompts:
        generate = dataclasses.replace(
            config.generate,
            n=e.n,
            temperature=e.temperature,
            logprobs=False,
            max_new_tokens=e.max_new_tokens or config.generate.max_new_tokens,
        )
        lines, _ = sample_and_judge(config, policy, e.prompts, judge, folder, generate)
        metrics.update(judged_means(lines, prefix="eval_"))
    if e.math:
        results = evaluate_math(policy, config=MathEvalConfig(**{**e.math, "output_dir": str(folder / "math")}))
        for bench, summary in results["benchmarks"].items():
            metrics[f"math_{bench}_accuracy"] = summary.get("accuracy")
        _free()
    return metrics


def run_round(config: IterateConfig, round_: int, policy: str, judge: Judge) -> dict[str, Any]:
    """Generate → judge → pair → train → merge → evaluate; returns the round's metrics (round.json)."""
    folder = Path(config.output_dir) / f"round-{round_}"
    done = folder / "round.json"
    if done.exists():
        return read_json(done)
    folder.mkdir(parents=True, exist_ok=True)
    prompts = config.prompts[(round_ - 1) % len(config.prompts)]
    generate = dataclasses.replace(config.generate, seed=config.generate.seed + 1000 * round_)
    lines, root = sample_and_judge(config, policy, prompts, judge, folder, generate)
    scored = folder / "scored.jsonl"
    records, stats = build_pairs([(line, record_of(line, str(scored), root)) for line in lines], config.pairs)
    summary = write_pairs(records, stats, folder / "pairs.jsonl")
    print(format_summary(summary), flush=True)
    metrics: dict[str, Any] = {
        "round": round_,
        "policy": policy,
        **judged_means(lines, prefix="sample_"),
        "pairs": stats.pairs,
        "prompts_without_pairs": stats.prompts_without_pairs,
        "mean_gap": summary["mean_gap"],
    }
    if not records:
        metrics["stopped"] = "no pairs: every prompt's samples tied or fell below the gap"
        write_json(done, metrics)
        return metrics
    train_config = config.train_config(
        policy, str(folder / "pairs.jsonl"), str(folder / "train"), round_, image_root=summary["image_root"]
    )
    trained = folder / "train" / "train_summary.json"
    if trained.exists():
        result = read_json(trained)
    else:
        # A round killed mid-training continues from its newest checkpoint (train refuses to reuse the folder).
        train_config.train.setdefault("resume_from_checkpoint", True)
        result = train(train_config)
        result = {
            "train_loss": result["train_loss"],
            "global_step": result["global_step"],
            "final_dir": result["final_dir"],
        }
        write_json(trained, result)
    _free()
    metrics.update(train_loss=result["train_loss"], train_steps=result["global_step"])
    metrics["next_policy"] = _next_policy(train_config, result["final_dir"], folder / "merged")
    metrics.update(evaluate(config, metrics["next_policy"], judge, folder / "eval"))
    write_json(done, metrics)
    return metrics


SETTINGS = "iterate_settings.json"


def check_settings(config: IterateConfig) -> None:
    """Finished rounds are reused only by the config that made them: any other setting (judge, generate.n,
    prompts, train...) is refused, naming what changed; `rounds` may grow."""
    out = Path(config.output_dir)
    now = {
        k: v for k, v in json.loads(json.dumps(dataclasses.asdict(config))).items() if k not in ("rounds", "output_dir")
    }
    if (out / SETTINGS).exists():
        old = read_json(out / SETTINGS)
        diff = {k: (old.get(k), now.get(k)) for k in sorted(set(old) | set(now)) if old.get(k) != now.get(k)}
        if diff:
            raise ValueError(
                f"{out} holds rounds made with other settings {diff} (old, new); use another output_dir, or "
                "delete it to start again"
            )
    elif out.exists() and any(out.glob("round-*")):
        raise ValueError(f"{out} holds rounds but no {SETTINGS}: not this config's run; use another output_dir")
    write_json(out / SETTINGS, now)


def _next_policy(train_config: TrainConfig, final_dir: str, merged: Path) -> str:
    """The trained model as a checkpoint: a LoRA adapter merged into the round's start, or the full model."""
    if not train_config.lora.enabled:
        return final_dir
    if not (merged / "mm_unidpo_merge.json").exists():
        merge_adapter(final_dir, merged, base=train_config.model.name_or_path, family=train_config.model.family)
        _free()
    return str(merged)


def iterate(config: IterateConfig) -> dict[str, Any]:
    """Every round, then the report; returns {"rounds": [...], "report": path}."""
    check_settings(config)
    judge = make_judge(config.judge.kind, **config.judge.options)
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    start = out / "round-0" / "round.json"
    if config.evaluate.prompts or config.evaluate.math:
        if not start.exists():
            start.parent.mkdir(parents=True, exist_ok=True)
            metrics = {
                "round": 0,
                "next_policy": config.model,
                **evaluate(config, config.model, judge, out / "round-0" / "eval"),
            }
            write_json(start, metrics)
        rows.append(read_json(start))
    policy = config.model
    for round_ in range(1, config.rounds + 1):
        print(f"\n== round {round_}/{config.rounds}: sampling from {policy}", flush=True)
        metrics = run_round(config, round_, policy, judge)
        rows.append(metrics)
        if "stopped" in metrics:
            print(f"round {round_}: {metrics['stopped']}; stopping", flush=True)
            break
        policy = metrics["next_policy"]
    report = write_report(out, rows)
    return {"rounds": rows, "report": str(report)}


def write_report(out: Path, rows: list[dict[str, Any]]) -> Path:
    """report.json and report.md: one column per round."""
    write_json(out / "report.json", rows)
    keys = [
        k
        for k in dict.fromkeys(k for row in rows for k in row)
        if k not in ("round", "policy", "next_policy", "stopped")
    ]

    def cell(value: Any) -> str:
        if value is None:
            return ""
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = [
        "# mm-unidpo iterate",
        "",
        "Round 0 is the starting model (held-out metrics only); round r samples from "
        "round r-1's result, trains on its pairs and is evaluated after training.",
        "",
        "| metric | " + " | ".join(f"round {row['round']}" for row in rows) + " |",
        "|---|" + "---|" * len(rows),
    ]
    lines += [f"| {k} | " + " | ".join(cell(row.get(k)) for row in rows) + " |" for k in keys]
    lines += [
        "",
        *[f"- round {row['round']}: {row['stopped']}" for row in rows if row.get("stopped")],
        *[f"- round {row['round']} model: `{row['next_policy']}`" for row in rows if row.get("next_policy")],
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mm-unidpo iterate", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("config", help="iterate config (YAML, see above)")
    parser.add_argument("--rounds", type=int, help="number of rounds (default: the config's)")
    parser.add_argument(
        "--out", "--output-dir", dest="output_dir", help="the run's folder (None: the config's output_dir)"
    )
    args = parser.parse_args(argv)
    config = load_iterate_config(args.config, rounds=args.rounds, output_dir=args.output_dir)
    result = iterate(config)
    print(Path(result["report"]).read_text(encoding="utf-8"))
    print(f"report: {result['report']}")
    return 0
