"""`mm-unidpo demo`: the embedded default, end to end, offline, on CPU.

    mm-unidpo demo                       # ~3-4 min on 2 CPU cores -> runs/demo/report.md
    mm-unidpo demo --seeds 3             # mean ± std over seeds 0, 1, 2 (~10 min)
    mm-unidpo demo --tiny --out /tmp/d   # every stage, a few steps each (the smoke test, ~15 s)
    mm-unidpo demo --study               # SFT, DPO, Uni-DPO and its ablations, + mDPO, AdaDPO; 3 seeds,
                                         # with the blank-image reliance measure -> runs/study/study.md
    mm-unidpo demo --task math           # the text path, SmolLM2-135M-Instruct on arithmetic word
                                         # problems (~20 min) -> runs/demo_math/report.md

The VLM task (default): a synthetic world of shapes (:mod:`.world`), a small LLaVA pretrained on vision
(:mod:`.vision`) and fine-tuned on noisy web-style text until it hallucinates (:mod:`.sft`), on-policy
preference pairs judged by a rule judge (:mod:`.preferences`, :mod:`.judge`), DPO / Uni-DPO / AdaDPO
through `mm-unidpo train` with `configs/demo/*.yaml`, and held-out POPE + CHAIR through lmms-eval with our
plugin model (:mod:`.evaluate`), reported in `report.md` with figures (:mod:`.report`, :mod:`.plots`) and
`results.json`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

from mm_unidpo.cli_args import HelpFormatter
from mm_unidpo.errors import UsageError

from .math_task import main as math_main
from .pipeline import STUDY, VARIANTS, DemoConfig, run_seed
from .report import write_report
from .study import write_study

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mm-unidpo demo", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--out", help="report folder (default: runs/demo; runs/demo_math for --task math)")
    parser.add_argument(
        "--seeds", type=int, default=None, help="number of seeds; >1 reports mean ± std (default 1; --study: 3)"
    )
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    parser.add_argument(
        "--tiny",
        "--smoke",
        dest="tiny",
        action="store_true",
        help="tiny sizes and a few steps per stage (a smoke test, numbers are meaningless)",
    )
    parser.add_argument("--task", choices=("vlm", "math"), default="vlm")
    parser.add_argument(
        "--methods",
        default=None,
        help=f"comma-separated alignment runs (default dpo,unidpo,adadpo; --study: its list) of {', '.join(VARIANTS)}",
    )
    parser.add_argument(
        "--study",
        action="store_true",
        help="the image study: every run of the ablation and the image terms, 3 seeds, blank-image reliance",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: 1 for the VLM task, whose ops are too small to split; 2 for math)",
    )
    parser.add_argument("--verbose", action="store_true", help="keep library INFO logs")
    return parser


@contextlib.contextmanager
def _quiet(verbose: bool, threads: int) -> Iterator[None]:
    """The stages print their own summaries: library INFO lines, weight-loading bars and deprecation
    warnings (and bitsandbytes' missing-kernel note, irrelevant without 4-bit) would bury them. Everything
    changed here (log levels, torch threads) is restored afterwards, so `main` can be called in-process."""
    import torch

    names = ("mm_unidpo", "transformers", "accelerate", "peft", "bitsandbytes", "datasets", "httpx")
    levels = {name: logging.getLogger(name).level for name in names}
    old_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    with warnings.catch_warnings():
        if not verbose:
            warnings.simplefilter("ignore", FutureWarning)
            for name in names:
                logging.getLogger(name).setLevel(logging.ERROR)
        from transformers.utils import logging as hf_logging

        bars = hf_logging.is_progress_bar_enabled()
        if not verbose:
            hf_logging.disable_progress_bar()
        try:
            yield
        finally:
            torch.set_num_threads(old_threads)
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)
            if bars:
                hf_logging.enable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.seeds = args.seeds or (3 if args.study else 1)
    if args.study and args.task != "vlm":
        raise UsageError("--study is the VLM task's image study (no --task math)")
    args.methods = args.methods or (",".join(STUDY) if args.study else "dpo,unidpo,adadpo")
    threads = args.threads or (2 if args.task == "math" else 1)
    with _quiet(args.verbose, threads):
        if args.task == "math":
            return math_main(args, list(argv or []))
        return _vlm(args, list(argv or []))


def _vlm(args: argparse.Namespace, argv: list[str]) -> int:
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    unknown = [m for m in methods if m not in VARIANTS]
    if unknown:
        raise UsageError(f"--methods: unknown method(s) {unknown}; choose from {', '.join(VARIANTS)}")
    config = DemoConfig.tiny() if args.tiny else DemoConfig()
    config.methods = methods
    config.image_reliance = args.study
    out = Path(args.out or ("runs/study" if args.study else "runs/demo"))
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    per_seed = []
    for k in range(args.seeds):
        seed = args.seed + k
        run_dir = out if args.seeds == 1 else out / f"seed-{seed}"
        if (run_dir / "work").exists():  # a fresh SFT model each time: no stale adapters or caches
            shutil.rmtree(run_dir / "work")
        per_seed.append(run_seed(config, seed, run_dir, out))
    report = write_report(out, per_seed, time.perf_counter() - start, argv)
    if args.study:
        report = write_study(out, per_seed, time.perf_counter() - start, "mm-unidpo demo " + " ".join(argv))
    minutes = (time.perf_counter() - start) / 60
    print(f"\nDone in {minutes:.1f} min. Report: {report}  (numbers: {out / 'results.json'})", flush=True)
    return 0
