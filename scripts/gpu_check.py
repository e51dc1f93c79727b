#!/usr/bin/env python
"""The GPU checks behind scripts/gpu_check.sh, and the wheels they need.

    python scripts/gpu_check.py run [--part part1|part2|all] [--dry-run] [--cpu]    # one table at the end
    python scripts/gpu_check.py wheels --part part1 [--dest scripts/gpu_wheels]   # `make gpu-wheels`, here

Checks (CHECKS below; each step a subprocess with a time limit, so one failure does not hide the rest):
  part1  `mm-unidpo train` on a tiny LLaVA through `accelerate launch` with the shipped FSDP and ZeRO-3
         configs on 1 GPU, LoRA and full fine-tuning (reference precompute), each equal to the plain
         run: every logged metric within a tolerance; `scripts/bench_vs_trl.py` at batch 8 on the GPU.
  part2  peak memory of one QLoRA Uni-DPO step for LLaVA-1.5-7B and Qwen2-VL-7B at their real configs
         with random weights (`scripts/bench_qlora_memory.py`), against README's estimates.
A check whose packages are missing (neither installed nor among the wheels) is skipped, and says so.

The GPU machine has no network: `wheels` downloads, here, what a part needs and the machine lacks
(gpu_check_wheels.py). `--dry-run` runs nothing: the table of what would run and what would be skipped.
`--cpu` runs part1's comparison with the DDP config on 2 CPU processes instead (accelerate shards only
on GPUs): a check of this script, not of sharding.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpu_check_wheels import PARTS, WHEELS, download_wheels, module_of, wheel_files

REPO = Path(__file__).resolve().parents[1]
# bench_qlora_memory's model names -> the config whose job scripts/estimate_memory.py estimates (README's table)
ESTIMATED_JOBS = {
    "llava15-7b": "configs/llava15_7b_qlora_unidpo_rlaifv.yaml",
    "qwen2vl-7b": "configs/qwen2vl_7b_qlora_unidpo.yaml",
}
METRIC_RTOL, METRIC_ATOL = 2e-3, 1e-4  # GPU kernels reduce in other orders under the wrappers


@dataclass
class Check:
    name: str
    part: str
    needs: list[str]  # importable modules
    run: Any = field(repr=False)  # (args, workdir) -> list of Rows


@dataclass
class Row:
    check: str
    status: str  # PASS, FAIL, SKIP
    value: str = ""
    expected: str = ""
    note: str = ""


# ---- part1: scale-out equals the plain run ----------------------------------------------------------


def _tiny_job(workdir: Path, tuning: str) -> Path:
    """A tiny LLaVA, 8 pairs with generated images, and the job config (LoRA or full fine-tuning)."""
    model_dir = workdir / "tiny_llava"
    if not model_dir.is_dir():  # imported here: --dry-run and the wheel download need none of these
        import numpy as np
        from PIL import Image

        from mm_unidpo.testing import tiny

        model, processor = tiny("llava", seed=0)
        model.save_pretrained(model_dir)
        processor.save_pretrained(model_dir)
        rng = np.random.default_rng(0)
        rows = []
        for i in range(8):
            Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(workdir / f"img{i}.png")
            rows.append(
                {
                    "id": f"r{i}",
                    "prompt": "<image>\nWhat is in the image?",
                    "images": [f"img{i}.png"],
                    "chosen": f"It is picture number {i}, {'quite ' * i}clearly.",
                    "rejected": "A red bus.",
                    "score_chosen": 8.0 - i / 2,
                    "score_rejected": 2.0 + i / 4,
                }
            )
        (workdir / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = {
        "model": {"name_or_path": str(model_dir), "dtype": "float32", "head_chunk_size": 64},
        "lora": {"enabled": tuning == "lora", "r": 8, "alpha": 16, "dropout": 0.0},
        "data": {"train": str(workdir / "pairs.jsonl"), "image_root": str(workdir), "max_length": 256},
        "loss": {"name": "unidpo", "params": {"beta": 2.0}},
        "reference": {"precompute": tuning == "full"},
        "train": {
            "learning_rate": 1e-3,
            "max_steps": 2,
            "per_device_train_batch_size": 4,
            "seed": 0,
            "logging_steps": 1,
            "save_strategy": "no",
            "disable_tqdm": True,
            "report_to": "none",
        },
    }
    path = workdir / f"job_{tuning}.yaml"  # JSON is YAML
    path.write_text(json.dumps(config))
    return path


def logged_metrics(output_dir: Path) -> list[dict[str, float]]:
    """The per-step log entries of a run (trainer_state.json)."""
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    return [{k: v for k, v in e.items() if isinstance(v, (int, float))} for e in history if "loss" in e]


def compare_metrics(plain: list[dict[str, float]], other: list[dict[str, float]]) -> tuple[bool, float, str]:
    """(equal within tolerance, largest relative difference, the worst key) over every step and metric."""
    if len(plain) != len(other) or not plain:
        return False, float("inf"), f"{len(plain)} vs {len(other)} logged steps"
    worst, worst_key, ok = 0.0, "", True
    for a, b in zip(plain, other):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                return False, float("inf"), f"{key} logged by one run only"
            diff = abs(a[key] - b[key])
            rel = diff / max(abs(a[key]), 1e-12)
            ok &= diff <= METRIC_ATOL + METRIC_RTOL * abs(a[key])
            if rel > worst and diff > METRIC_ATOL:
                worst, worst_key = rel, key
    return ok, worst, worst_key


def _train(args: argparse.Namespace, job: Path, out: Path, launch: list[str], processes: int = 1) -> str | None:
    """Run one training on `processes` processes sharing the global batch of 4 pairs; None if it worked,
    else its last error line."""
    command = [
        *launch,
        "-m",
        "mm_unidpo.cli",
        "train",
        str(job),
        f"--train.output_dir={out}",
        "--overwrite",
        f"--train.per_device_train_batch_size={4 // processes}",
    ]
    if args.cpu:
        command.append("--train.use_cpu=true")
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    if result.returncode == 0:
        return None
    lines = result.stderr.strip().splitlines() or ["no output"]
    return next((line for line in reversed(lines) if "Error" in line or "error:" in line), lines[-1])[-300:]


def scale_out(args: argparse.Namespace, workdir: Path) -> list[Row]:
    """Plain vs `accelerate launch` (FSDP, ZeRO-3; on CPU: DDP on 2 processes), LoRA and full fine-tuning."""
    rows = []
    launchers = {"ddp": "ddp.yaml"} if args.cpu else {"fsdp": "fsdp.yaml", "zero3": "zero3.yaml"}
    processes = 2 if args.cpu else 1
    for tuning in ("lora", "full"):
        job = _tiny_job(workdir, tuning)
        failed = _train(args, job, workdir / f"plain_{tuning}", [sys.executable])
        if failed:
            rows.append(Row(f"plain train ({tuning})", "FAIL", note=failed))
            continue
        plain = logged_metrics(workdir / f"plain_{tuning}")
        for name, config in launchers.items():
            check = f"accelerate {name} = plain ({tuning})"
            if name == "zero3" and not _importable("deepspeed"):
                rows.append(
                    Row(check, "SKIP", note="deepspeed does not import (not installed, or its wheel did not install)")
                )
                continue
            launch = [
                sys.executable,
                "-m",
                "accelerate.commands.launch",
                "--config_file",
                str(REPO / "configs" / "accelerate" / config),
                "--num_processes",
                str(processes),
                "--mixed_precision",
                "no",
                f"--main_process_port={_free_port()}",  # not 29500: another job on the machine may hold it
            ]
            out = workdir / f"{name}_{tuning}"
            failed = _train(args, job, out, launch, processes)
            if failed:
                rows.append(Row(check, "FAIL", note=failed))
                continue
            ok, worst, key = compare_metrics(plain, logged_metrics(out))
            rows.append(
                Row(
                    check,
                    "PASS" if ok else "FAIL",
                    f"max rel diff {worst:.1e}",
                    f"<= {METRIC_RTOL:g} (+{METRIC_ATOL:g})",
                    key,
                )
            )
    return rows


def bench_vs_trl(args: argparse.Namespace, workdir: Path) -> list[Row]:
    command = [
        sys.executable,
        str(REPO / "scripts" / "bench_vs_trl.py"),
        "--steps-b1",
        "1",
        "--steps-b8",
        "3",
        "--no-scaling",
        "--no-loss-overhead",
        "--no-flops",
    ]
    final = _last_json(command, 420)
    if isinstance(final, str):
        return [Row("bench_vs_trl batch 8", "FAIL", note=final)]
    speedup, memory = final["speedup_b8"], final["mem_ratio_b8"]  # the bench's own (CPU) targets
    return [
        Row("bench_vs_trl b8: pairs/s ours / TRL", "PASS" if speedup >= 2.0 else "FAIL", f"{speedup:.2f}x", ">= 2.0x"),
        Row("bench_vs_trl b8: peak mem ours / TRL", "PASS" if memory <= 0.5 else "FAIL", f"{memory:.2f}", "<= 0.5"),
    ]


# ---- part2: QLoRA peak memory at the real sizes -----------------------------------------------------


def qlora_memory(args: argparse.Namespace, workdir: Path) -> list[Row]:
    final = _last_json(
        [
            sys.executable,
            str(REPO / "scripts" / "bench_qlora_memory.py"),
            "--steps",
            "2",
            "--workdir",
            str(workdir / "qlora"),
        ],
        900,
    )
    if isinstance(final, str):
        return [Row("QLoRA peak memory", "FAIL", note=final)]
    estimates = memory_estimates()
    rows = []
    for result in final["results"]:
        low, high = estimates[ESTIMATED_JOBS[result["model"].split()[0]]]
        peak = result.get("peak_allocated_gb", result.get("peak_rss_gb"))
        within = peak is not None and peak <= high * 1.25
        rows.append(
            Row(
                f"QLoRA step peak ({result['model']})",
                "PASS" if within else "FAIL",
                f"{peak} GB",
                f"README ~{low:g}-{high:g} GB",
                f"reserved {result.get('peak_reserved_gb')} GB",
            )
        )
    return rows


def memory_estimates() -> dict[str, tuple[float, float]]:
    """(low, high) GB per job from scripts/estimate_memory.py, the source of README's memory table."""
    command = [sys.executable, str(REPO / "scripts" / "estimate_memory.py"), "--json"]
    out = subprocess.run(
        command, capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(REPO)}
    )
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    return {row["where"]: (row["total_gb"], row["high_gb"]) for row in rows}


def _last_json(command: list[str], timeout: int) -> dict[str, Any] | str:
    """The last line of a command's output as JSON, or why not."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    try:
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"over {timeout} s"
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        return (result.stderr.strip().splitlines() or ["no output"])[-1]
    return json.loads(lines[-1])


CHECKS = [
    Check(
        "scale-out: accelerate FSDP / ZeRO-3 = plain",
        "part1",
        ["accelerate", "peft", "PIL", "yaml", "matplotlib"],  # what `mm-unidpo train` imports beyond torch
        scale_out,
    ),
    Check("bench_vs_trl batch 8", "part1", ["trl", "peft"], bench_vs_trl),
    Check("QLoRA peak memory (bench_qlora_memory)", "part2", ["bitsandbytes", "peft"], qlora_memory),
]


# ---- running, the table, the wheels -----------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def plan(args: argparse.Namespace) -> tuple[list[Check], list[Row]]:
    """The checks to run, and a SKIP row for each of the others with the reason."""
    parts = ["part1", "part2"] if args.part == "all" else [args.part]
    # a dry run counts the wheels as installable; a real run has installed them (or failed to)
    available = {module_of(w) for w in wheel_files(Path(args.wheels))} if args.dry_run else set()
    gpu = args.cpu or _cuda()
    todo, skipped = [], []
    for check in CHECKS:
        missing = [m for m in check.needs if not _importable(m) and m not in available]
        if check.part not in parts:
            skipped.append(Row(check.name, "SKIP", note=f"in {check.part}; this run is {args.part}"))
        elif not gpu:
            skipped.append(Row(check.name, "SKIP", note="no CUDA device (use --cpu for the DDP check on CPU)"))
        elif args.cpu and check.run is not scale_out:
            skipped.append(Row(check.name, "SKIP", note="GPU only (--cpu runs the scale-out comparison only)"))
        elif missing:
            skipped.append(Row(check.name, "SKIP", note=f"{', '.join(missing)}: not installed, not in {args.wheels}"))
        else:
            todo.append(check)
    return todo, skipped


def _cuda() -> bool:
    return _device_name() not in ("no GPU", "no torch")


def _device_name() -> str:
    try:
        import torch  # the machine's: it may be missing, which the table says
    except ImportError:
        return "no torch"
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"


def print_table(rows: list[Row]) -> None:
    columns = ["check", "status", "value", "expected", "note"]
    cells = [[getattr(r, c) for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    print("| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")


def install_wheels(args: argparse.Namespace) -> list[str]:
    """pip install of the wheels beside the script into this (the check's own) environment, no deps; one
    that does not install is said, and the checks needing it are skipped (the plan finds it missing)."""
    files = wheel_files(Path(args.wheels))
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-build-isolation"]
    env = {**os.environ, "DS_BUILD_OPS": "0"}  # DeepSpeed: no compiled ops at install (none is used here)
    if files and not args.dry_run and subprocess.run([*pip, *map(str, files)], env=env).returncode != 0:
        for file in files:  # one at a time, to say which
            if subprocess.run([*pip, str(file)], env=env, capture_output=True).returncode != 0:
                print(f"could not install {file.name}: the checks that need it are skipped")
    return [f.name for f in files]


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    installed = install_wheels(args)
    print(f"wheels from {args.wheels}: {', '.join(installed) or 'none'}{' (dry run: not installed)' * args.dry_run}")
    todo, rows = plan(args)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="gpu_check_"))
    for check in todo:
        if args.dry_run:
            rows.append(Row(check.name, "SKIP", note="dry run"))
            continue
        print(f"running: {check.name}", flush=True)
        try:
            rows.extend(check.run(args, workdir))
        except Exception as error:  # noqa: BLE001 -- one check's failure must not hide the others'
            rows.append(Row(check.name, "FAIL", note=f"{type(error).__name__}: {error}"[:200]))
    where = "dry run" if args.dry_run else ("CPU (DDP, not sharding)" if args.cpu else _device_name())
    print(f"\ngpu_check {args.part} on {where}, {time.perf_counter() - start:.0f} s")
    print_table(rows)
    return 1 if any(r.status == "FAIL" for r in rows) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the checks, print one table")
    r.add_argument("part", nargs="?", choices=["part1", "part2", "all"], default="all")
    r.add_argument("--dry-run", action="store_true", help="run nothing: what would run and what is skipped")
    r.add_argument("--cpu", action="store_true", help="part1's comparison with DDP on 2 CPU processes")
    r.add_argument("--wheels", default=str(WHEELS), help="folder of wheels to install first")
    r.add_argument("--workdir", help="where runs go (default: a temporary folder)")
    w = sub.add_parser("wheels", help="download a part's wheels (on a machine with network)")
    w.add_argument("--part", choices=sorted(PARTS), required=True)
    w.add_argument("--dest", default=str(WHEELS))
    w.add_argument("--python-version", default="3.11", help="the GPU machine's Python (binary wheels)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    return run(args) if args.command == "run" else download_wheels(args.part, args.dest, args.python_version)


if __name__ == "__main__":
    raise SystemExit(main())
