#!/usr/bin/env python
"""Reward-model and PRM judges: each prompt prefilled once for its samples vs one forward per sample.

    python scripts/bench_judges_shared.py            # 8 prompts x 8 samples, ~400-token prompts, ~100-token responses
    python scripts/bench_judges_shared.py --smoke    # toy sizes, seconds (the test)

A 4-layer 512-wide Llama reward model (sequence classification) and Qwen2 PRM (token classification) with
random weights, saved to a temporary folder; each side of each judge runs alone in its own process on one
torch thread, after a warm-up on the first prompt's samples. Prints a table, then one JSON line with each
judge's CPU and wall speed-up, max abs score difference and peak RSS of both sides.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "sat",
    "on",
    "mat",
    "near",
    "big",
    "red",
    "barn",
    "blue",
    "sky",
    "river",
    "stone",
    "house",
    "tree",
    "green",
    "field",
    "runs",
    "jumps",
]
SIZE = dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=8)


def _text(rng: random.Random, tokens: int) -> str:
    out = ""
    while len(out) < tokens * 2.5:  # the offline test tokenizers give ~2.5 characters a token
        out += rng.choice(WORDS) + " "
    return out.strip()


def build(folder: Path, smoke: bool) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification, Qwen2Config, Qwen2ForTokenClassification

    from mm_unidpo.testing import tiny_tokenizer

    size = {**SIZE, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2} if smoke else SIZE
    torch.manual_seed(0)
    tok = tiny_tokenizer("llama3")
    config = LlamaConfig(vocab_size=len(tok), num_labels=1, pad_token_id=tok.pad_token_id, **size)
    LlamaForSequenceClassification(config).save_pretrained(folder / "rm")
    tok.save_pretrained(folder / "rm")
    tok = tiny_tokenizer("qwen2_vl")
    tok.add_special_tokens({"additional_special_tokens": ["<extra_0>"]})  # the PRM's step separator
    config = Qwen2Config(vocab_size=len(tok), num_labels=2, pad_token_id=tok.pad_token_id, **size)
    Qwen2ForTokenClassification(config).save_pretrained(folder / "prm")
    tok.save_pretrained(folder / "prm")


def items(prompts: int, samples: int, prompt_tokens: int, step_tokens: int) -> list[tuple[Any, str]]:
    from mm_unidpo.onpolicy.records import PromptRecord

    rng = random.Random(0)
    out = []
    for p in range(prompts):
        record = PromptRecord(_text(rng, prompt_tokens), [], f"p{p}", p, None, {})
        out += [(record, "\n\n".join(_text(rng, step_tokens) for _ in range(4))) for _ in range(samples)]
    return out


def side(folder: Path, kind: str, how: str, sizes: list[int]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    data = items(*sizes)
    if kind == "rm":
        from mm_unidpo.onpolicy.judges.scorers import RewardModelScorer

        scorer = RewardModelScorer(str(folder / "rm"), batch_size=8, device="cpu")
        run = scorer.score_all if how == "ours" else scorer.score_one_by_one
    else:
        from mm_unidpo.onpolicy.judges import make_judge

        judge = make_judge(
            "prm", model=str(folder / "prm"), batch_size=8, device="cpu", dtype="float32", share_prompt=how == "ours"
        )

        def run(xs: list[tuple[Any, str]]) -> list[float]:
            return [reward for j in judge(xs) for reward in j["step_rewards"]]

    run(data[: sizes[1]])  # warm-up: one prompt's samples
    wall, cpu = time.perf_counter(), time.process_time()
    scores = run(data)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"wall": wall, "cpu": cpu, "scores": [float(s) for s in scores], "peak_mb": peak}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="toy sizes: checks the bench runs")
    parser.add_argument("--side", nargs=3, metavar=("FOLDER", "KIND", "HOW"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = [2, 3, 40, 10] if args.smoke else [8, 8, 400, 25]  # prompts, samples, prompt tokens, tokens a step
    if args.side:
        print(json.dumps(side(Path(args.side[0]), args.side[1], args.side[2], sizes)))
        return 0
    summary: dict[str, Any] = {"sizes": dict(zip(("prompts", "samples", "prompt_tokens", "step_tokens"), sizes))}
    with tempfile.TemporaryDirectory() as tmp:
        build(Path(tmp), args.smoke)
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
        print(f"{'judge':6} {'side':32} {'wall s':>8} {'CPU s':>8} {'peak MB':>8}")
        for kind in ("rm", "prm"):
            res = {}
            for how in ("reference", "ours"):
                command = [sys.executable, __file__, *(["--smoke"] if args.smoke else []), "--side", tmp, kind, how]
                done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
                res[how] = json.loads(done.stdout.strip().splitlines()[-1])
                label = "one forward per sample" if how == "reference" else "ours: one prefill per prompt"
                r = res[how]
                print(f"{kind:6} {label:32} {r['wall']:8.2f} {r['cpu']:8.2f} {r['peak_mb']:8.0f}")
            ours, ref = res["ours"], res["reference"]
            summary[kind] = {
                "cpu_speedup": round(ref["cpu"] / ours["cpu"], 2),
                "wall_speedup": round(ref["wall"] / ours["wall"], 2),
                "max_abs_diff": max(abs(a - b) for a, b in zip(ours["scores"], ref["scores"])),
                "peak_mb": {"reference": round(ref["peak_mb"]), "ours": round(ours["peak_mb"])},
            }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
