"""Benchmark: our preference trainer vs TRL's DPOTrainer in its strongest CPU configuration, same model and data.

    python scripts/bench_vs_trl.py                      # LLaVA-1.5-shaped bench model: batch 1, batch 8 mixed, scaling
    python scripts/bench_vs_trl.py --arch qwen2_vl      # Qwen2-VL-shaped variant (256 image tokens per image)
    python scripts/bench_vs_trl.py --smoke              # toy sizes, a few minutes: checks that it all runs

Head-to-head: LoRA r=16 on every linear layer of the language model (the same peft LoraConfig on both
sides), reference = the same base with the adapter disabled (TRL gets `peft_config` and `ref_model=None`,
which is exactly that), sigmoid DPO beta 0.1, AdamW, float32, gradient checkpointing on both (unless
--no-gc). Each case runs alone in its own process (its peak memory is its own), the cases one after the
other, one torch thread each. TRL's headline configuration is "TRL-compact": its LM head on completion
positions only, which is what TRL does on CUDA (on CPU stock TRL projects every position onto the
vocabulary; that stock run is shown as context at batch 1).

Cases:
  batch 1   LLaVA-shaped pairs (one image, ~150-token responses), 1 pair per micro-batch
  batch 8   a micro-batch of 8 pairs of mixed lengths: responses 20-400 tokens, 1-2 images per pair
  scaling   batch 1, one factor at a time: images per pair 1 -> 4, response length 64 -> 1024,
            vocabulary 32k -> 152k (Qwen2-VL's); ours vs TRL-compact; a table and one plot
  LM head   the head alone at a 152k vocabulary on the batch-8 micro-batch's scored tokens: chunked vs
            materialised peak memory
Our variants, side by side at batch 1 and 8 (each adds one thing): plain two-row layout; shared prefix
(one pair per row, dense block mask); + packing (the whole micro-batch in one row, per-pair block
attention); + chunked LM head (our default).

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
              "mem_ratio", "tokens_per_pair", "min_tokens_per_pair", "speedup_b8", "mem_ratio_b8", "tokens_ratio_b8",
              "head_mem_ratio_152k")
TARGETS = dict(speedup_b8=2.0, mem_ratio_b8=0.5, tokens_ratio_b8=1.05, head_mem_ratio_152k=0.25, speedup=1.6,
               mem_ratio=0.5, overhead=2.0)
RESULT_TAG = "BENCH_RESULT "
LOSSES = ("dpo", "unidpo", "adadpo")
VARIANT_LABELS = {"plain": "ours: plain (2 rows/pair)", "shared_prefix": "ours: shared prefix (dense mask)",
                  "packed": "ours: + packing (per-pair attn)", "packed_chunked": "ours: + chunked head (default)"}
SCALING = {"images": (1, 2, 4), "response": (64, 256, 1024), "vocab": (32064, 65536, 152064)}
SMOKE_SCALING = {"images": (1, 2), "response": (8, 32), "vocab": (1024, 4096)}
QWEN_VOCAB = 152064


# ---- workers (run in subprocesses) ----------------------------------------------------------------------

def run_case(case: dict, args) -> dict:
    """One measured run: case = {kind, scenario, batch, steps, variant?, images?, response?, vocab?}."""
    import torch

    import bench_common as bc

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    kind = case["kind"]
    if kind == "head":
        return {"peak_mem_mb": bc.head_peak_mb(case["tokens"], case["hidden"], case["vocab"], case["chunk"])}
    spec = (bc.SMOKE if args.smoke else bc.ARCH)[args.arch]
    _, processor, _ = bc.build(args.arch, args.smoke)
    batch, steps = case["batch"], case["steps"]
    records = bc.make_records(processor, (args.warmup + steps) * batch, spec["image_size"], args.smoke,
                              scenario=case["scenario"], images=case.get("images"), response=case.get("response"))
    common = dict(arch=args.arch, smoke=args.smoke, warmup=args.warmup, steps=steps, checkpointing=not args.no_gc,
                  batch=batch, vocab=case.get("vocab"), out=case["out"])
    flops = not args.no_flops and case.get("flops", True)
    if kind == "ours":
        return bc.run_ours(records=records, variant=case["variant"], flops=flops, **common)
    if kind == "overhead":  # one pair repeated, the objectives interleaved step by step
        common.update(steps=steps * len(LOSSES))
        result = bc.run_ours(records=[records[0]] * (args.warmup + steps * len(LOSSES)), cycle=LOSSES, flops=False,
                             **common)
        result["loss_only_us"] = {n: bc.loss_only_us(n, repeats=200 if args.smoke else 2000) for n in LOSSES}
        return result
    return bc.run_trl(records=records, compact_head=kind == "trl_compact", flops=flops, **common)


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


def launch(args, cases: list[dict]) -> subprocess.Popen:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(cases), "--arch", args.arch,
           "--warmup", str(args.warmup), "--threads", str(args.threads)]
    cmd += [flag for flag, on in (("--smoke", args.smoke), ("--no-gc", args.no_gc), ("--no-flops", args.no_flops),
                                  ("--glibc-default", args.glibc_default)) if on]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads), TQDM_DISABLE="1",
               TRANSFORMERS_VERBOSITY="error", PYTHONWARNINGS="ignore", TOKENIZERS_PARALLELISM="false",
               # Freed tensors go back to the OS, so peak RSS measures live memory: with glibc's default
               # (a threshold that grows to 32 MB) freed heap memory stays resident and the peak counts the
               # allocator's retention (batch 8: ours 3150 -> 737 MB, TRL 4614 -> 4067 MB in one check).
               **({} if args.glibc_default else {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}))
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=str(HERE.parent))


def collect(proc: subprocess.Popen) -> list[dict]:
    stdout, stderr = proc.communicate()
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    sys.stderr.write(stderr[-6000:])
    raise SystemExit(f"bench worker failed (exit {proc.returncode})")


def run_all(args, cases: dict[str, dict]) -> dict[str, dict]:
    """Real runs: one process per case, one after the other. Smoke: a few processes side by side."""
    names = list(cases)
    if not args.smoke:
        results = {}
        for name in names:
            print(f"... {name}", file=sys.stderr, flush=True)
            results[name] = collect(launch(args, [cases[name]]))[0]
        return results
    groups = [names[i::3] for i in range(3)]
    procs = [(group, launch(args, [cases[n] for n in group])) for group in groups if group]
    return {n: r for group, proc in procs for n, r in zip(group, collect(proc))}


def fmt(x, spec=".3f", none="n/a"):
    return none if x is None else format(x, spec)


def row(cells, widths):
    return "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))


def table(title: str, results: dict[str, dict], labels: dict[str, str], min_tokens: float, baseline: str) -> None:
    print(f"\n{title}")
    widths = (34, 8, 8, 8, 9, 8, 9, 8, 7)
    print(row(("side", "pairs/s", "x " + "TRL-c", "s/step", "peak MB", "x TRL-c", "tok/pass", "x min", "GFLOP"),
              widths))
    base = results[baseline]
    for name, label in labels.items():
        r = results[name]
        print(row((label, fmt(r["pairs_per_s"], ".4f"), fmt(r["pairs_per_s"] / base["pairs_per_s"], ".2f"),
                   fmt(statistics.median(r["step_s"]), ".2f"), fmt(r["peak_mem_mb"], ".0f"),
                   fmt(r["peak_mem_mb"] / base["peak_mem_mb"], ".2f"), fmt(r["tokens_per_pass_per_pair"], ".0f"),
                   fmt(r["tokens_per_pass_per_pair"] / min_tokens, ".3f"), fmt(r["gflop_per_pair"], ".1f")), widths))


def plot_scaling(path: Path, scaling: dict[str, list[tuple]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, (factor, points) in zip(axes, scaling.items()):
        xs = [p[0] for p in points]
        ax.plot(xs, [p[1] for p in points], "o-", label="pairs/s, ours / TRL-compact")
        ax.plot(xs, [p[2] for p in points], "s--", label="peak memory, ours / TRL-compact")
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_xlabel({"images": "images per pair", "response": "response tokens", "vocab": "vocabulary"}[factor])
        ax.set_xticks(xs)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=("llava", "qwen2_vl"), default="llava")
    parser.add_argument("--steps-b1", type=int, default=None, help="timed steps at batch 1 (default 5; smoke 1)")
    parser.add_argument("--steps-b8", type=int, default=None, help="timed steps at batch 8 (default 3; smoke 1)")
    parser.add_argument("--steps-scaling", type=int, default=None, help="timed steps per scaling point (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    parser.add_argument("--smoke", action="store_true", help="toy sizes (same code path)")
    parser.add_argument("--no-gc", action="store_true", help="gradient checkpointing off on both sides")
    parser.add_argument("--no-flops", action="store_true", help="skip the FLOP count (taken during the warm-up step)")
    parser.add_argument("--no-scaling", action="store_true", help="skip the scaling table")
    parser.add_argument("--no-loss-overhead", action="store_true", help="skip the Uni-DPO / AdaDPO overhead run")
    parser.add_argument("--plot", default=None, help="scaling plot path (default runs/bench/scaling_<arch>.png)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per case (default 1: on a small shared machine, 2 OpenMP threads with one "
                             "core taken by another process stall at every barrier and make timings meaningless)")
    parser.add_argument("--glibc-default", action="store_true",
                        help="keep glibc's malloc defaults (peak RSS then includes freed memory the allocator keeps)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.warmup < 1:
        parser.error("--warmup must be >= 1 (the first step pays one-off costs)")
    s1 = args.steps_b1 or (1 if args.smoke else 5)
    s8 = args.steps_b8 or (1 if args.smoke else 3)
    ss = args.steps_scaling or (1 if args.smoke else 3)
    if args.worker:
        import shutil

        out = tempfile.mkdtemp(prefix="bench_vs_trl_")  # the trainers' output_dir (nothing is saved there)
        try:
            results = []
            for case in json.loads(args.worker):
                results.append(run_case({**case, "out": out}, args))
            print(RESULT_TAG + json.dumps(results), flush=True)
        finally:
            shutil.rmtree(out, ignore_errors=True)
        return 0

    import bench_common as bc

    start, load0 = time.perf_counter(), os.getloadavg()
    spec = (bc.SMOKE if args.smoke else bc.ARCH)[args.arch]
    cases: dict[str, dict] = {}
    for scenario, batch, steps in (("b1", 1, s1), ("mixed", 8, s8)):
        tag = "b1" if batch == 1 else "b8"
        for variant in bc.VARIANTS:
            cases[f"{tag}/{variant}"] = dict(kind="ours", variant=variant, scenario=scenario, batch=batch, steps=steps)
        cases[f"{tag}/trl_compact"] = dict(kind="trl_compact", scenario=scenario, batch=batch, steps=steps)
    cases["b1/trl"] = dict(kind="trl", scenario="b1", batch=1, steps=s1)
    if not args.no_loss_overhead:
        cases["overhead"] = dict(kind="overhead", scenario="b1", batch=1, steps=1 if args.smoke else 6)
    scaling_axes = SMOKE_SCALING if args.smoke else SCALING
    if not args.no_scaling:
        for factor, values in scaling_axes.items():
            for value in values:
                for kind in ("ours", "trl_compact"):
                    cases[f"scale/{factor}={value}/{kind}"] = dict(
                        kind=kind, variant="packed_chunked", scenario="b1", batch=1, steps=ss, flops=False,
                        **{factor: value})
    results = run_all(args, cases)
    # the LM head alone, on the batch-8 micro-batch's scored tokens, at Qwen2-VL's vocabulary
    b8_counts = results["b8/packed_chunked"]["counts"]
    scored = round(8 * (b8_counts["chosen"] + b8_counts["rejected"]))
    head_vocab = 8192 if args.smoke else QWEN_VOCAB
    head = run_all(args, {f"head/{c}": dict(kind="head", tokens=scored, hidden=spec["hidden"], vocab=head_vocab,
                                            chunk=c) for c in ("auto", None)})
    load1 = os.getloadavg()

    ours1, trl1 = results["b1/packed_chunked"], results["b1/trl_compact"]
    ours8, trl8 = results["b8/packed_chunked"], results["b8/trl_compact"]

    def minimum(r):
        c = r["counts"]
        return c["image"] + c["prompt"] + c["chosen"] + c["rejected"]

    min1, min8 = minimum(ours1), minimum(ours8)
    cuda = ours1["memory"] == "cuda_max_allocated"
    print("=" * 110)
    print(f"bench_vs_trl  |  command: {shlex.join([Path(sys.executable).name, *sys.argv])}")
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; "
          f"{'CUDA' if cuda else 'CPU only'}; {args.threads} torch thread(s) per case; load average {load0[0]:.1f} at "
          f"start, {load1[0]:.1f} at end")
    print(f"versions: {versions()}")
    print(f"model ({args.arch}{', SMOKE sizes' if args.smoke else ''}): LM {spec['layers']} layers, hidden "
          f"{spec['hidden']}, {spec['heads']} heads, MLP {spec['intermediate']}, vocab {spec['vocab']}; vision "
          f"{spec['vision']}; {ours1['params_total'] / 1e6:.1f}M params, LoRA trainable "
          f"{ours1['params_trainable'] / 1e6:.2f}M")
    print(f"setup: LoRA {bc.LORA} (peft, same LoraConfig both sides), reference = base with adapter disabled, "
          f"sigmoid DPO beta 0.1, fp32 AdamW, gradient checkpointing {'OFF' if args.no_gc else 'ON'} on both; "
          f"warm-up {args.warmup} step(s), then {s1} (batch 1) / {s8} (batch 8) / {ss} (scaling) timed steps")
    mem_label = ("CUDA max_memory_allocated over the timed steps above the allocation before train()" if cuda else
                 "peak RSS over the timed steps (mark reset after the warm-up) minus RSS right before train() (models, "
                 "LoRA, trainer built)" + ("" if args.glibc_default else ", MALLOC_MMAP_THRESHOLD_=65536 on every side "
                                           "(freed memory returns to the OS: live memory)"))
    print(f"peak MB = {mem_label}; tok/pass = rows x length of each language-model pass (policy, reference: "
          f"padding included) per pair; x min = over the minimum, image + prompt text + chosen + rejected tokens "
          f"(the prompt once, no padding); GFLOP = FLOPs of the warm-up step per pair (torch FlopCounterMode); "
          f"x TRL-c = ratio to TRL with its LM head on completion positions only")

    labels = {**{f"b1/{v}": VARIANT_LABELS[v] for v in bc.VARIANTS}, "b1/trl_compact": "TRL-compact (headline)",
              "b1/trl": "TRL stock (CPU: head on all positions)"}
    c1 = ours1["counts"]
    table(f"BATCH 1: LLaVA-shaped pairs (mean: image {c1['image']:.0f} + prompt {c1['prompt']:.0f} + chosen "
          f"{c1['chosen']:.0f} + rejected {c1['rejected']:.0f} = {min1:.0f} tokens min)", results, labels, min1,
          "b1/trl_compact")
    labels8 = {**{f"b8/{v}": VARIANT_LABELS[v] for v in bc.VARIANTS}, "b8/trl_compact": "TRL-compact (headline)"}
    c8 = ours8["counts"]
    table(f"BATCH 8 MIXED: 8 pairs per micro-batch, responses 20-400 tokens, 1-2 images (mean per pair: image "
          f"{c8['image']:.0f} + prompt {c8['prompt']:.0f} + chosen {c8['chosen']:.0f} + rejected {c8['rejected']:.0f} "
          f"= {min8:.0f} tokens min)", results, labels8, min8, "b8/trl_compact")

    speedup1, mem1 = ours1["pairs_per_s"] / trl1["pairs_per_s"], ours1["peak_mem_mb"] / trl1["peak_mem_mb"]
    speedup8, mem8 = ours8["pairs_per_s"] / trl8["pairs_per_s"], ours8["peak_mem_mb"] / trl8["peak_mem_mb"]
    tokens8 = ours8["tokens_per_pass_per_pair"] / min8
    flop1 = (trl1["gflop_per_pair"] / ours1["gflop_per_pair"]) if ours1.get("gflop_per_pair") else None
    dense, pairs = results["b1/shared_prefix"], results["b1/packed"]
    print(f"\nbatch 1: token ratio TRL/ours {trl1['tokens_per_pass_per_pair'] / ours1['tokens_per_pass_per_pair']:.2f}, "
          f"FLOP ratio {fmt(flop1, '.2f')}, speedup {speedup1:.2f}x; the packed row's attention: dense block mask "
          f"{statistics.median(dense['step_s']):.2f} s/step -> per-pair blocks {statistics.median(pairs['step_s']):.2f}")

    scaling: dict[str, list[tuple]] = {}
    if not args.no_scaling:
        print("\nSCALING (batch 1, one factor at a time from the batch-1 pairs; ours = default path)")
        widths = (22, 10, 10, 8, 9, 9, 8)
        print(row(("point", "ours p/s", "TRL-c p/s", "speedup", "ours MB", "TRL-c MB", "mem x"), widths))
        for factor, values in scaling_axes.items():
            for value in values:
                o, t = results[f"scale/{factor}={value}/ours"], results[f"scale/{factor}={value}/trl_compact"]
                sp, mr = o["pairs_per_s"] / t["pairs_per_s"], o["peak_mem_mb"] / t["peak_mem_mb"]
                scaling.setdefault(factor, []).append((value, sp, mr))
                print(row((f"{factor} = {value}", fmt(o["pairs_per_s"], ".4f"), fmt(t["pairs_per_s"], ".4f"),
                           f"{sp:.2f}x", fmt(o["peak_mem_mb"], ".0f"), fmt(t["peak_mem_mb"], ".0f"), f"{mr:.2f}"), widths))
        plot = Path(args.plot or HERE.parent / "runs" / "bench" / f"scaling_{args.arch}.png")
        plot_scaling(plot, scaling, f"mm-unidpo vs TRL-compact, {args.arch}-shaped bench model, batch 1, {cpu_model()}")
        print(f"plot: {plot}")

    head_chunked, head_full = head["head/auto"]["peak_mem_mb"], head["head/None"]["peak_mem_mb"]
    head_ratio = head_chunked / head_full
    print(f"\nLM HEAD alone at vocabulary {head_vocab}, {scored} scored tokens (the batch-8 micro-batch), hidden "
          f"{spec['hidden']}, frozen (LoRA), forward + backward: chunked (auto) {head_chunked:.0f} MB vs materialised "
          f"{head_full:.0f} MB -> {head_ratio:.3f}")

    overhead, alone_pct, noise = {}, {}, float("nan")
    if "overhead" in results:
        print("\nLOSS OVERHEAD (our trainer, one pair repeated, objectives interleaved step by step)")
        per = results["overhead"]["per_loss_step_s"]
        alone = results["overhead"]["loss_only_us"]
        base = statistics.median(per["dpo"])
        widths3 = (10, 6, 13, 9, 15, 14)
        print(row(("objective", "steps", "median wall s", "vs DPO", "loss fn fwd+bwd", "extra vs DPO"), widths3))
        for name in LOSSES:
            overhead[name] = (statistics.median(a / b for a, b in zip(per[name], per["dpo"])) - 1) * 100
            alone_pct[name] = (alone[name] - alone["dpo"]) / 1e6 / base * 100
            print(row((name, len(per[name]), f"{statistics.median(per[name]):.3f}", f"{overhead[name]:+.1f}%",
                       f"{alone[name]:.0f} us", f"{alone_pct[name]:+.4f}%"), widths3))
        noise = statistics.pstdev(per["dpo"]) / base * 100 if len(per["dpo"]) > 1 else float("nan")
        print(f"'vs DPO' = median over rounds of the step-time ratio to DPO's step in the same round (DPO's own step "
              f"times vary by {noise:.1f}%); 'loss fn' = the objective alone on one pair's log-probs; 'extra vs "
              f"DPO' = its extra time as a share of a DPO step")

    print("\nTARGETS (ratios, this machine, one run)")
    checks = [("batch 8: pairs/s >= 2.0x TRL-compact", speedup8 >= TARGETS["speedup_b8"], f"{speedup8:.2f}x"),
              ("batch 8: peak memory <= 0.5x TRL-compact", mem8 <= TARGETS["mem_ratio_b8"], f"{mem8:.2f}"),
              ("batch 8: tokens computed <= 1.05x min", tokens8 <= TARGETS["tokens_ratio_b8"], f"{tokens8:.3f}x"),
              ("152k vocab: LM head memory <= 0.25x materialised", head_ratio <= TARGETS["head_mem_ratio_152k"],
               f"{head_ratio:.3f}"),
              ("batch 1: pairs/s >= 1.6x TRL-compact", speedup1 >= TARGETS["speedup"], f"{speedup1:.2f}x"),
              ("batch 1: peak memory <= 0.5x TRL-compact", mem1 <= TARGETS["mem_ratio"], f"{mem1:.2f}")]
    for name in overhead:
        if name != "dpo":
            checks.append((f"{name} overhead <= 2%", alone_pct[name] <= TARGETS["overhead"],
                           f"objective's own extra cost {alone_pct[name]:+.4f}% of a step; end-to-end "
                           f"{overhead[name]:+.1f}% (noise {noise:.1f}%)"))
    for name, ok, value in checks:
        print(f"  [{'met' if ok else 'NOT met'}] {name}: {value}")
    print(f"total bench time {time.perf_counter() - start:.0f} s")
    final = dict(pairs_per_s_ours=ours1["pairs_per_s"], pairs_per_s_trl=trl1["pairs_per_s"], speedup=speedup1,
                 peak_mem_ours_mb=ours1["peak_mem_mb"], peak_mem_trl_mb=trl1["peak_mem_mb"], mem_ratio=mem1,
                 tokens_per_pair=ours1["tokens_per_pass_per_pair"], min_tokens_per_pair=min1, speedup_b8=speedup8,
                 mem_ratio_b8=mem8, tokens_ratio_b8=tokens8, head_mem_ratio_152k=head_ratio)
    assert tuple(final) == FINAL_KEYS
    print(json.dumps({k: round(v, 4) for k, v in final.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
