"""Benchmark: on-policy data with each image's prefill shared, against one prefill per sample / per claim.

    python scripts/bench_onpolicy.py            # LLaVA-1.5-shaped bench model (576 image tokens)
    python scripts/bench_onpolicy.py --smoke    # toy sizes, a minute: checks that it all runs

generate  8 prompts (one image, ~50 text tokens) x n = 8 samples of 128 new tokens (no early stop), seeded
          sampling at temperature 1. Ours: `HFSampler.sample` (one prefill per prompt, the cache repeated;
          `mm_unidpo.onpolicy.sampling`); baseline: transformers' `generate(num_return_sequences=8)` through
          the adapter (the prompts copied 8 times before the prefill). Then greedy, 16 new tokens, on both
          (baseline: the prompts repeated 8 times, what num_return_sequences does; transformers refuses it
          for greedy decoding): `generate_greedy_equal` compares the tokens.
judge     8 images x 8 samples x 6 claims = 384 yes/no questions for the VLM judge. Ours: `VLMJudge.margins`
          (one prefill per image, claims + answers against its cache); baseline: `margins_one_by_one`,
          today's one forward per claim (prompt and both answers packed).

Each side runs alone in its own process, one after the other, one torch thread each (`--smoke`: all four
in one process); peak memory is the process's peak RSS over the timed part minus its RSS before it.
Speedups are wall-clock ratios; "CPU x" the ratio of the processes' CPU seconds (one thread each:
steadier than wall time on a shared machine). The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
RESULT_TAG = "BENCH_RESULT "
TARGETS = dict(generate_speedup=2.0, judge_speedup=4.0)
FULL = dict(prompts=8, n=8, new_tokens=128, greedy_tokens=16, claims=6, claim_tokens=(8, 16))
SMOKE = dict(prompts=2, n=2, new_tokens=8, greedy_tokens=4, claims=2, claim_tokens=(4, 8))
SIDES = ("generate_ours", "generate_hf", "judge_ours", "judge_hf")


# ---- workers (run in subprocesses) ----------------------------------------------------------------------


def setup(smoke: bool):
    import bench_common as bc

    from mm_unidpo.onpolicy.records import PromptRecord

    model, processor, spec = bc.build("llava", smoke)
    model.eval()
    model.config.use_cache = True  # build() turns it off for training
    model.generation_config.use_cache = True
    size = SMOKE if smoke else FULL
    pairs = bc.make_records(processor, size["prompts"], spec["image_size"], smoke)
    records = [PromptRecord(p.prompt, list(p.images), p.id, p.index, None) for p in pairs]
    return model, processor, records, size


def run_generate(side: str, smoke: bool) -> dict:
    import bench_common as bc
    import torch

    from mm_unidpo.onpolicy.samplers import GenerateConfig, HFSampler
    from mm_unidpo.onpolicy.sampling import generate_n

    model, processor, records, size = setup(smoke)
    n = size["n"]
    config = GenerateConfig(n=n, temperature=1.0, max_new_tokens=size["new_tokens"], batch_size=len(records))
    sampler = HFSampler(model, processor, config, token_budget=None)
    adapter = sampler.adapter
    texts, images = [sampler.render(r) for r in records], [list(r.images) for r in records]
    sample = dict(
        do_sample=True,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        max_new_tokens=size["new_tokens"],
        min_new_tokens=size["new_tokens"],
    )  # every row decodes all its tokens: equal work on both sides
    base = bc.reset_peak_rss()
    start, cpu = time.perf_counter(), time.process_time()
    torch.manual_seed(0)
    if side == "ours":
        out = generate_n(adapter, model, texts, images, n, **sample)
    else:
        out = adapter.generate(model, texts, images, num_return_sequences=n, **sample)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = bc._status_kb("VmHWM") - base
    greedy = dict(do_sample=False, temperature=None, top_p=None, top_k=None, max_new_tokens=size["greedy_tokens"])
    if side == "ours":
        ids = generate_n(adapter, model, texts, images, n, **greedy)
    else:
        ids = adapter.generate(
            model, [t for t in texts for _ in range(n)], [i for i in images for _ in range(n)], **greedy
        )
    return {
        "seconds": seconds,
        "cpu_s": cpu,
        "peak_mb": peak / 1024,
        "rows": int(out.shape[0]),
        "new_tokens": int(out.shape[1]),
        "sampled": out.tolist(),
        "greedy": ids.tolist(),
    }


def run_judge(side: str, smoke: bool) -> dict:
    import bench_common as bc

    from mm_unidpo.onpolicy.judges import VLMJudge

    model, processor, records, size = setup(smoke)
    judge = VLMJudge(model, processor, batch_size=8)
    rng, tok = random.Random(1), processor.tokenizer
    questions = [
        judge.claim_prompt(record, bc._text(tok, rng, rng.randint(*size["claim_tokens"])).capitalize() + ".")
        for record in records
        for _ in range(size["n"] * size["claims"])
    ]
    base = bc.reset_peak_rss()
    start, cpu = time.perf_counter(), time.process_time()
    margins = judge.margins(questions) if side == "ours" else judge.margins_one_by_one(questions)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {
        "seconds": seconds,
        "cpu_s": cpu,
        "peak_mb": (bc._status_kb("VmHWM") - base) / 1024,
        "questions": len(questions),
        "margins": margins,
    }


def run_side(name: str, smoke: bool) -> dict:
    import torch

    torch.set_num_threads(1)
    stage, side = name.split("_")
    return (run_generate if stage == "generate" else run_judge)("ours" if side == "ours" else "hf", smoke)


# ---- the driver -----------------------------------------------------------------------------------------


def launch(names: list[str], smoke: bool) -> list[dict]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", ",".join(names)] + (["--smoke"] if smoke else [])
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        TQDM_DISABLE="1",
        TRANSFORMERS_VERBOSITY="error",
        PYTHONWARNINGS="ignore",
        TOKENIZERS_PARALLELISM="false",
        MALLOC_MMAP_THRESHOLD_="65536",
        MALLOC_TRIM_THRESHOLD_="0",
    )  # peak RSS = live memory (bench_vs_trl)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(HERE.parent))
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG) :])
    sys.stderr.write(proc.stderr[-6000:])
    raise SystemExit(f"bench worker {names} failed (exit {proc.returncode})")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="toy sizes (same code path)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(RESULT_TAG + json.dumps([run_side(name, args.smoke) for name in args.worker.split(",")]), flush=True)
        return 0

    start, load0 = time.perf_counter(), os.getloadavg()
    if args.smoke:  # one process for all four: the code paths, not the timings (process start-up dominates)
        results = dict(zip(SIDES, launch(list(SIDES), smoke=True)))
    else:
        results = {}
        for name in SIDES:
            print(f"... {name}", file=sys.stderr, flush=True)
            results[name] = launch([name], smoke=False)[0]
            print(f"... {name}: {results[name]['seconds']:.1f} s, CPU {results[name]['cpu_s']:.1f} s", file=sys.stderr)
    load1 = os.getloadavg()
    size = SMOKE if args.smoke else FULL
    g_ours, g_hf, j_ours, j_hf = (results[s] for s in SIDES)
    diffs = [abs(a - b) for a, b in zip(j_ours["margins"], j_hf["margins"])]
    final = {
        "generate_speedup": g_hf["seconds"] / g_ours["seconds"],
        "generate_greedy_equal": g_ours["greedy"] == g_hf["greedy"],
        "generate_samples_equal": g_ours["sampled"] == g_hf["sampled"],
        "generate_s_ours": g_ours["seconds"],
        "generate_s_hf": g_hf["seconds"],
        "generate_cpu_speedup": g_hf["cpu_s"] / g_ours["cpu_s"],
        "generate_peak_mb_ours": g_ours["peak_mb"],
        "generate_peak_mb_hf": g_hf["peak_mb"],
        "judge_speedup": j_hf["seconds"] / j_ours["seconds"],
        "judge_scores_max_abs_diff": max(diffs),
        "judge_verdicts_equal": [m > 0 for m in j_ours["margins"]] == [m > 0 for m in j_hf["margins"]],
        "judge_s_ours": j_ours["seconds"],
        "judge_s_hf": j_hf["seconds"],
        "judge_cpu_speedup": j_hf["cpu_s"] / j_ours["cpu_s"],
        "judge_peak_mb_ours": j_ours["peak_mb"],
        "judge_peak_mb_hf": j_hf["peak_mb"],
    }
    rows = g_ours["rows"]
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} cores; load average {load0[0]:.2f} before, {load1[0]:.2f} after; "
        f"one torch thread per side"
    )
    print(
        "command: python scripts/bench_onpolicy.py"
        + (" --smoke" if args.smoke else "")
        + f"  ({time.perf_counter() - start:.0f} s in all)"
    )
    print(
        f"\nGENERATE: {size['prompts']} prompts x n={size['n']} samples x {size['new_tokens']} new tokens "
        f"({rows} rows; seeded sampling, temperature 1)"
    )
    print(f"{'side':<44}{'seconds':>9}{'CPU s':>9}{'rows/s':>9}{'peak MB':>9}{'speedup':>9}{'CPU x':>7}")
    for label, r in (("transformers generate(num_return_sequences=n)", g_hf), ("ours: one prefill per prompt", g_ours)):
        print(
            f"{label:<44}{r['seconds']:>9.2f}{r['cpu_s']:>9.2f}{rows / r['seconds']:>9.2f}{r['peak_mb']:>9.0f}"
            f"{g_hf['seconds'] / r['seconds']:>9.2f}{g_hf['cpu_s'] / r['cpu_s']:>7.2f}"
        )
    print(
        f"greedy ({size['greedy_tokens']} tokens) equal: {final['generate_greedy_equal']}; "
        f"seeded samples equal: {final['generate_samples_equal']}"
    )
    print(
        f"\nJUDGE: {j_ours['questions']} yes/no questions ({size['prompts']} images x {size['n']} samples x "
        f"{size['claims']} claims)"
    )
    print(f"{'side':<44}{'seconds':>9}{'CPU s':>9}{'claims/s':>9}{'peak MB':>9}{'speedup':>9}{'CPU x':>7}")
    for label, r in (("one forward per claim", j_hf), ("ours: one prefill per image", j_ours)):
        print(
            f"{label:<44}{r['seconds']:>9.2f}{r['cpu_s']:>9.2f}{r['questions'] / r['seconds']:>9.1f}"
            f"{r['peak_mb']:>9.0f}{j_hf['seconds'] / r['seconds']:>9.2f}{j_hf['cpu_s'] / r['cpu_s']:>7.2f}"
        )
    print(
        f"margins: max abs diff {final['judge_scores_max_abs_diff']:.2e}; verdicts equal: "
        f"{final['judge_verdicts_equal']}"
    )
    print("\nTARGETS")
    for key, target in TARGETS.items():
        print(f"  {key} >= {target}: {final[key]:.2f} ({'met' if final[key] >= target else 'MISSED'})")
    print(json.dumps({k: round(v, 6) if isinstance(v, float) else v for k, v in final.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
