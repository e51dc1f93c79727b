"""Benchmark: our preference trainer (packed shared-prefix fast path) vs TRL's DPOTrainer, same model and data.

    python scripts/bench_vs_trl.py                      # LLaVA-1.5-shaped bench model, default N
    python scripts/bench_vs_trl.py --arch qwen2_vl      # Qwen2-VL-shaped variant (256 image tokens)
    python scripts/bench_vs_trl.py --smoke              # toy sizes, ~1 minute: checks that it all runs

Head-to-head (one run, each side in its own subprocess so that peak memory is its own): LoRA r=16 on every
linear layer of the language model (same peft LoraConfig on both sides), reference = the same base with the
adapter disabled (TRL gets `peft_config` and `ref_model=None`, which is exactly that), sigmoid DPO beta=0.1,
micro-batch 1 pair, no accumulation, AdamW, float32, equal gradient checkpointing (on unless --no-gc).
Each side: `--warmup` steps, then `--steps` timed steps (wall clock, perf_counter at each step end), one
torch thread per side by default (`--threads`), the sides one after the other.

Context (same data): ours with the fast path off (`shared_prefix=False`, two rows per pair like TRL), TRL
with its LM head restricted to completion positions (what TRL does on CUDA; on CPU it scores every position),
and Uni-DPO / AdaDPO step time against DPO (objectives interleaved step by step in one run on one pair).

The last line printed is one JSON object with exactly the keys of `FINAL_KEYS`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
FINAL_KEYS = ("pairs_per_s_ours", "pairs_per_s_trl", "speedup", "peak_mem_ours_mb", "peak_mem_trl_mb",
              "mem_ratio", "tokens_per_pair", "min_tokens_per_pair")
TARGETS = dict(speedup=1.7, mem_ratio=0.6, tokens=1.05, overhead=2.0)
RESULT_TAG = "BENCH_RESULT "
LOSSES = ("dpo", "unidpo", "adadpo")


# ---- workers (run in subprocesses) ----------------------------------------------------------------------

def worker(args, out: str) -> dict:
    import torch

    import bench_common as bc

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    spec = (bc.SMOKE if args.smoke else bc.ARCH)[args.arch]
    _, processor, _ = bc.build(args.arch, args.smoke)
    records = bc.make_records(processor, args.warmup + args.steps, spec["image_size"], args.smoke)
    common = dict(arch=args.arch, smoke=args.smoke, warmup=args.warmup, checkpointing=not args.no_gc)
    flops = not args.no_flops
    if args.worker == "ours":
        return {"ours": bc.run_ours(records=records, steps=args.steps, out=out, flops=flops, **common)}
    if args.worker == "trl":
        return {"trl": bc.run_trl(records=records, steps=args.steps, out=out, flops=flops, **common)}
    result = {}
    if not args.no_context:  # TRL first: its memory is clean; ours_plain's comes second in this process
        result["trl_compact"] = bc.run_trl(records=records, steps=args.steps, out=out, compact_head=True,
                                           flops=flops, **common)
        result["ours_plain"] = bc.run_ours(records=records, steps=args.steps, out=out, shared_prefix=False,
                                           flops=flops, **common)
    if not args.no_loss_overhead:
        k = args.overhead_steps
        result["overhead"] = bc.run_ours(records=[records[0]] * (args.warmup + k * len(LOSSES)), out=out,
                                         steps=k * len(LOSSES), cycle=LOSSES, flops=False, **common)
        result["loss_only_us"] = {name: bc.loss_only_us(name, repeats=200 if args.smoke else 2000) for name in LOSSES}
    return result


# ---- the parent ---------------------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def versions() -> str:
    from importlib.metadata import version

    return ", ".join(f"{p} {version(p)}" for p in ("torch", "transformers", "trl", "peft", "accelerate"))


def launch(args, name: str) -> subprocess.Popen:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--arch", args.arch,
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--overhead-steps", str(args.overhead_steps),
           "--threads", str(args.threads)]
    cmd += [flag for flag, on in (("--smoke", args.smoke), ("--no-gc", args.no_gc), ("--no-flops", args.no_flops),
                                  ("--no-context", args.no_context), ("--no-loss-overhead", args.no_loss_overhead))
            if on]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads), TQDM_DISABLE="1",
               TRANSFORMERS_VERBOSITY="error", PYTHONWARNINGS="ignore",
               TOKENIZERS_PARALLELISM="false")
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=str(HERE.parent))


def collect(name: str, proc: subprocess.Popen) -> dict:
    stdout, stderr = proc.communicate()
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    sys.stderr.write(stderr[-6000:])
    raise SystemExit(f"worker {name!r} failed (exit {proc.returncode})")


def fmt(x, spec=".3f", none="n/a"):
    return none if x is None else format(x, spec)


def row(cells, widths):
    return "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=("llava", "qwen2_vl"), default="llava")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per side (default 5; smoke 2)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    parser.add_argument("--overhead-steps", type=int, default=None,
                        help="timed steps per objective in the loss-overhead run (default 6; smoke 1)")
    parser.add_argument("--smoke", action="store_true", help="toy sizes (same code path), ~1 minute")
    parser.add_argument("--no-gc", action="store_true", help="gradient checkpointing off on both sides")
    parser.add_argument("--no-flops", action="store_true", help="skip the FLOP count (taken during the first, untimed step)")
    parser.add_argument("--no-context", action="store_true", help="skip ours-without-fast-path and TRL-compact")
    parser.add_argument("--no-loss-overhead", action="store_true", help="skip the Uni-DPO / AdaDPO overhead run")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per side (default 1: on a small shared machine, 2 OpenMP threads with one "
                             "core taken by another process stall at every barrier and make timings meaningless)")
    parser.add_argument("--worker", choices=("ours", "trl", "context"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.steps = args.steps or (2 if args.smoke else 5)
    args.overhead_steps = args.overhead_steps or (1 if args.smoke else 6)
    if args.warmup < 1:
        parser.error("--warmup must be >= 1 (the first step pays one-off costs)")
    if args.worker:
        import shutil

        out = tempfile.mkdtemp(prefix="bench_vs_trl_")  # the trainers' output_dir (nothing is saved there)
        try:
            print(RESULT_TAG + json.dumps(worker(args, out)), flush=True)
        finally:
            shutil.rmtree(out, ignore_errors=True)
        return 0

    import bench_common as bc

    start, load0 = time.perf_counter(), os.getloadavg()
    names = ["ours", "trl"] + ([] if args.no_context and args.no_loss_overhead else ["context"])
    if args.smoke:  # timings are not the point: run the workers side by side
        procs = {n: launch(args, n) for n in names}
        res = {k: v for n in names for k, v in collect(n, procs[n]).items()}
    else:  # one at a time, so that the sides do not compete for the cores
        res = {k: v for n in names for k, v in collect(n, launch(args, n)).items()}
    load1 = os.getloadavg()
    ours, trl = res["ours"], res["trl"]
    spec = (bc.SMOKE if args.smoke else bc.ARCH)[args.arch]
    counts = ours["counts"]
    min_tokens = counts["image"] + counts["prompt"] + counts["chosen"] + counts["rejected"]
    cuda = ours["memory"] == "cuda_max_allocated"

    print("=" * 100)
    print(f"bench_vs_trl  |  command: {shlex.join([Path(sys.executable).name, *sys.argv])}")
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; "
          f"{'CUDA' if cuda else 'CPU only'}; {args.threads} torch thread(s) per side; load average {load0[0]:.1f} at "
          f"start, {load1[0]:.1f} at end")
    print(f"versions: {versions()}")
    vis = spec["vision"]
    print(f"model ({args.arch}{', SMOKE sizes' if args.smoke else ''}): LM {spec['layers']} layers, hidden "
          f"{spec['hidden']}, {spec['heads']} heads, MLP {spec['intermediate']}, vocab {spec['vocab']}; vision "
          f"{vis}; {ours['params_total'] / 1e6:.1f}M params, LoRA trainable {ours['params_trainable'] / 1e6:.2f}M")
    print(f"setup: LoRA {bc.LORA} (peft, same LoraConfig both sides), reference = base with adapter disabled, "
          f"sigmoid DPO beta 0.1, micro-batch 1 pair, fp32 AdamW, gradient checkpointing "
          f"{'OFF' if args.no_gc else 'ON'} on both; warm-up {args.warmup} step(s), then {args.steps} timed steps")
    print(f"pair shape (as our adapter encodes it, mean): image {counts['image']:.0f} + prompt text "
          f"{counts['prompt']:.1f} + chosen {counts['chosen']:.1f} + rejected {counts['rejected']:.1f} = "
          f"{min_tokens:.1f} tokens (the minimum per pair); TRL row width for pair 0: {trl['trl_row_width']} "
          f"(completions {trl['trl_completion_tokens']})")
    mem_label = ("CUDA max_memory_allocated above the allocation before train()" if cuda else
                 "peak RSS during train() minus RSS right before it (models, LoRA, trainer already built; "
                 "kernel VmHWM reset)")
    print(f"peak mem = {mem_label}")
    print(f"tokens/pair = rows x length of every language-model forward (policy AND reference), per pair")

    print("\nHEAD-TO-HEAD")
    widths = (35, 8, 7, 9, 8, 9, 6, 9)
    header = ("side", "pairs/s", "s/step", "CPU-s/pr", "peak MB", "tok/pair", "x min", "GFLOP*")
    print(row(header, widths))

    def util(r):
        return r["cpu_s_per_pair"] * r["pairs_per_s"] / args.threads

    def line(label, r, mem_note=""):
        print(row((label, fmt(r["pairs_per_s"], ".4f"), fmt(statistics.median(r["step_s"]), ".2f"),
                   fmt(r["cpu_s_per_pair"], ".2f"), fmt(r["peak_mem_mb"], ".0f") + mem_note,
                   fmt(r["tokens_per_pair"], ".0f"), fmt(r["tokens_per_pair"] / min_tokens, ".2f"),
                   fmt(r["gflop_per_pair"], ".1f")), widths))

    line("ours (packed, shared prefix)", ours)
    line("TRL DPOTrainer " + __import__("importlib.metadata").metadata.version("trl"), trl)
    print("s/step = median; CPU-s/pr = process CPU time (all threads) per timed pair; GFLOP* = FLOPs of the "
          "warm-up step (one pair), torch FlopCounterMode")
    speedup = ours["pairs_per_s"] / trl["pairs_per_s"]
    mem_ratio = ours["peak_mem_mb"] / trl["peak_mem_mb"] if trl["peak_mem_mb"] > 0 else float("nan")
    flop_ratio = (trl["gflop_per_pair"] / ours["gflop_per_pair"]) if ours.get("gflop_per_pair") else None
    print(f"speedup (pairs/s ours / TRL) {speedup:.2f}x  |  CPU-time speedup "
          f"{trl['cpu_s_per_pair'] / ours['cpu_s_per_pair']:.2f}x  |  FLOP ratio TRL/ours {fmt(flop_ratio, '.2f')}  |"
          f"  memory ratio ours/TRL {mem_ratio:.2f}")
    print(f"step times (s): ours {[round(t, 2) for t in ours['step_s']]}, TRL {[round(t, 2) for t in trl['step_s']]}; "
          f"CPU busy (CPU time / wall / threads): ours {util(ours):.2f}, TRL {util(trl):.2f} (below 1: the side "
          f"waited for a core)")
    passes = ours["lm_calls_per_step"]
    print(f"tokens/pair: ours {ours['tokens_per_pair']:.0f} over {passes:.0f} LM passes (policy + reference) = "
          f"{ours['tokens_per_pair'] / passes:.0f} per pass = {ours['tokens_per_pair'] / passes / min_tokens:.3f}x "
          f"min; TRL {trl['tokens_per_pair']:.0f} over {trl['lm_calls_per_step']:.0f} passes = "
          f"{trl['tokens_per_pair'] / trl['lm_calls_per_step'] / min_tokens:.3f}x min per pass")

    if "ours_plain" in res:
        print("\nCONTEXT (where the gain comes from)")
        print(row(header, widths))
        line("ours (packed, shared prefix)", ours)
        line("ours, shared_prefix=False (2 rows)", res["ours_plain"], "~")
        line("TRL (stock; on CPU LM head on all)", trl)
        line("TRL, LM head on completions only+", res["trl_compact"])
        print("+ TRL patched (trl.trainer.utils._use_triton -> True) so that its fused LM head scores completion "
              "positions only, as it does on CUDA/XPU (on CPU, stock TRL projects every position onto the vocabulary)")
        print("~ ran second in its process (after TRL+): memory indicative only")
        print(f"speedup ours vs TRL+ {ours['pairs_per_s'] / res['trl_compact']['pairs_per_s']:.2f}x (CPU time "
              f"{res['trl_compact']['cpu_s_per_pair'] / ours['cpu_s_per_pair']:.2f}x), memory ratio ours/TRL+ "
              f"{ours['peak_mem_mb'] / res['trl_compact']['peak_mem_mb']:.2f}")

    overhead, alone_pct, noise = {}, {}, float("nan")
    if "overhead" in res:
        print("\nLOSS OVERHEAD (our trainer, one pair repeated, objectives interleaved step by step)")
        per, cpu = res["overhead"]["per_loss_step_s"], res["overhead"]["per_loss_cpu_step_s"]
        alone = res["loss_only_us"]
        base, cpu_base = statistics.median(per["dpo"]), statistics.median(cpu["dpo"])
        widths3 = (10, 6, 13, 9, 13, 9, 15, 14)
        print(row(("objective", "steps", "median wall s", "vs DPO", "median CPU s", "vs DPO", "loss fn fwd+bwd",
                   "extra vs DPO"), widths3))
        for name in LOSSES:
            med, cmed = statistics.median(per[name]), statistics.median(cpu[name])
            # Drift-robust: the median over rounds of (this objective's step / DPO's step in the same round).
            overhead[name] = (statistics.median(a / b for a, b in zip(per[name], per["dpo"])) - 1) * 100
            cpu_over = (statistics.median(a / b for a, b in zip(cpu[name], cpu["dpo"])) - 1) * 100
            alone_pct[name] = (alone[name] - alone["dpo"]) / 1e6 / base * 100
            print(row((name, len(per[name]), f"{med:.3f}", f"{overhead[name]:+.1f}%", f"{cmed:.3f}",
                       f"{cpu_over:+.1f}%", f"{alone[name]:.0f} us", f"{alone_pct[name]:+.4f}%"), widths3))
        noise = statistics.pstdev(per["dpo"]) / base * 100 if len(per["dpo"]) > 1 else float("nan")
        print(f"'vs DPO' = median over rounds of the step-time ratio to DPO's step in the same round; DPO's own step "
              f"times vary by {noise:.1f}% (std/median), so end-to-end differences of that size are machine noise. "
              f"'loss fn' = the objective alone (forward + backward on one pair's log-probs), 'extra vs DPO' = its "
              f"extra time as a share of a DPO step: what differs between the three runs (plus a few more logged "
              f"scalars).")

    print("\nTARGETS")
    per_pass = ours["tokens_per_pair"] / passes / min_tokens
    checks = [("speedup >= 1.7x", speedup >= TARGETS["speedup"], f"{speedup:.2f}x"),
              ("memory ratio <= 0.6", mem_ratio <= TARGETS["mem_ratio"], f"{mem_ratio:.2f}"),
              ("tokens/pair <= 1.05 x min (per LM pass)", per_pass <= TARGETS["tokens"], f"{per_pass:.3f}x"),
              ("tokens/pair <= 1.05 x min (all passes)", ours["tokens_per_pair"] / min_tokens <= TARGETS["tokens"],
               f"{ours['tokens_per_pair'] / min_tokens:.3f}x (policy + live reference = 2 passes)")]
    for name in overhead:
        if name != "dpo":  # judged on the objective's own cost: end-to-end, 2% is below this machine's noise
            checks.append((f"{name} overhead <= 2%", alone_pct[name] <= TARGETS["overhead"],
                           f"objective's own extra cost {alone_pct[name]:+.4f}% of a step; end-to-end "
                           f"{overhead[name]:+.1f}% (noise {noise:.1f}%)"))
    for name, ok, value in checks:
        print(f"  [{'met' if ok else 'NOT met'}] {name}: {value}")
    print(f"total bench time {time.perf_counter() - start:.0f} s")
    final = dict(pairs_per_s_ours=ours["pairs_per_s"], pairs_per_s_trl=trl["pairs_per_s"], speedup=speedup,
                 peak_mem_ours_mb=ours["peak_mem_mb"], peak_mem_trl_mb=trl["peak_mem_mb"], mem_ratio=mem_ratio,
                 # per language-model pass over the pair, the unit of the minimum; the live reference adds a
                 # second such pass (printed above), which a precomputed reference removes
                 tokens_per_pair=ours["tokens_per_pair"] / passes, min_tokens_per_pair=min_tokens)
    assert tuple(final) == FINAL_KEYS
    print(json.dumps({k: round(v, 4) for k, v in final.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
