"""``mm-unidpo eval lmms``: run lmms-eval on our model and tasks, then write a summary.

    mm-unidpo eval lmms --pretrained llava-hf/llava-1.5-7b-hf --adapter runs/x/adapter \\
        --tasks mm_pope_sample,mm_chair_sample --output-path runs/eval/x [--batch-size 8] [--load-in-4bit]
    mm-unidpo eval lmms summarize runs/eval/base runs/eval/x [--names base,x] [--out runs/eval/compare]

The first form is lmms-eval's own evaluation (``lmms-eval --model mm_unidpo --model_args ...
--include_path <repo>/eval ...``) run in this process, with our task folder included and our model
registered even where the package's entry point is not installed. Options it does not know are passed
to lmms-eval unchanged (e.g. ``--gen_kwargs``, ``--verbosity DEBUG``). It writes lmms-eval's results
JSON (and samples with ``--log-samples``) under ``--output-path``, plus ``summary.md`` and
``summary.png`` there. Unlike ``lmms-eval`` itself (which logs an evaluation error and exits 0), it
returns 1 when the evaluation fails. The second form compares finished runs (see :mod:`.summary`).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from mm_unidpo.cli_args import HelpFormatter
from mm_unidpo.model_source import check_model_source

from .registration import MODEL_NAME, register
from .summary import summarize_runs

DEFAULT_TASKS = "mm_pope_sample"


def tasks_dir() -> Path:
    """Our lmms-eval task folder: ``$MM_UNIDPO_EVAL_TASKS``, else ``eval/`` at the root of the repository
    this package is in (an editable install), else ``./eval``."""
    env = os.environ.get("MM_UNIDPO_EVAL_TASKS")
    if env:
        return Path(env)
    in_repo = Path(__file__).resolve().parents[3] / "eval"
    return in_repo if (in_repo / "utils.py").is_file() else Path.cwd() / "eval"


def _model_args(ns: argparse.Namespace) -> str:
    args = [f"pretrained={ns.pretrained}"]
    if ns.adapter:
        args.append(f"adapter={ns.adapter}")
    if ns.load_in_4bit:
        args.append("load_in_4bit=true")
    if ns.dtype:
        args.append(f"dtype={ns.dtype}")
    if ns.model_args:
        args.append(ns.model_args)
    return ",".join(args)


def _eval_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mm-unidpo eval lmms", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument(
        "--model", "--pretrained", dest="pretrained", required=True, help="hub id or local checkpoint of the base model"
    )
    p.add_argument("--adapter", help="LoRA adapter directory applied on top of --model")
    p.add_argument("--load-in-4bit", action="store_true", help="load the base in NF4 4-bit (CUDA, bitsandbytes)")
    p.add_argument("--dtype", default=None, help="auto (None), bfloat16, float16 or float32")
    p.add_argument("--tasks", default=DEFAULT_TASKS, help="comma-separated lmms-eval tasks")
    p.add_argument(
        "--out",
        "--output-path",
        dest="output_path",
        default=None,
        help="where results go (None: runs/eval/<adapter or model name>)",
    )
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if available)")
    p.add_argument("--limit", type=float, default=None, help="documents per task (for a quick check only)")
    p.add_argument("--model-args", default="", help="more model_args, e.g. system_prompt=...,max_new_tokens=256")
    p.add_argument("--include-path", action="append", default=[], help="another task folder (repeatable)")
    p.add_argument("--log-samples", action="store_true", help="also write every prompt and answer")
    p.add_argument("--verbosity", default="INFO")
    return p


def _default_output(ns: argparse.Namespace) -> str:
    source = ns.adapter or ns.pretrained
    return os.path.join("runs", "eval", Path(str(source).rstrip("/")).name or "model")


@contextlib.contextmanager
def _local_task_index(tasks: str, include_path: list[str]) -> Iterator[None]:
    """When every requested task is in our folders, do not index lmms-eval's ~3000 built-in task YAMLs
    (several seconds of pure-Python YAML parsing per run): lmms-eval's CLI builds its TaskManager from
    the name ``TaskManager`` in ``lmms_eval.__main__``, which is swapped for the time of the run."""
    import lmms_eval.__main__ as lmms_main
    from lmms_eval.tasks import TaskManager

    requested = [t.strip() for t in tasks.split(",") if t.strip()]
    local = TaskManager("ERROR", include_path=include_path, include_defaults=False)
    if (
        not requested
        or not all(t in local.all_tasks for t in requested)
        or getattr(lmms_main, "TaskManager", None) is not TaskManager
    ):
        yield
        return
    lmms_main.TaskManager = functools.partial(TaskManager, include_defaults=False)  # type: ignore[arg-type, misc]
    try:
        yield
    finally:
        lmms_main.TaskManager = TaskManager


def run_eval(argv: list[str]) -> int:
    ns, passthrough = _eval_parser().parse_known_args(argv)
    # A typo in a path fails now, not after lmms-eval, torch and transformers have been imported.
    check_model_source(ns.pretrained)
    if ns.adapter and not Path(ns.adapter).is_dir():
        raise FileNotFoundError(f"--adapter {ns.adapter}: no such folder")
    output = ns.output_path or _default_output(ns)
    lmms_argv = [
        "--model",
        MODEL_NAME,
        "--model_args",
        _model_args(ns),
        "--tasks",
        ns.tasks,
        "--batch_size",
        str(ns.batch_size),
        "--output_path",
        output,
        "--verbosity",
        ns.verbosity,
    ]
    if ns.device:
        lmms_argv += ["--device", ns.device]
    if ns.limit is not None:
        lmms_argv += ["--limit", str(int(ns.limit) if ns.limit >= 1 else ns.limit)]
    if ns.log_samples:
        lmms_argv.append("--log_samples")
    lmms_argv += passthrough

    from lmms_eval.__main__ import cli_evaluate_single, parse_eval_args
    from lmms_eval.utils import make_table
    from loguru import logger as eval_logger

    register()
    saved = sys.argv
    sys.argv = ["lmms-eval", *lmms_argv]
    try:
        _, args = parse_eval_args()
    finally:
        sys.argv = saved
    ours = tasks_dir()
    if not (ours / "utils.py").is_file():
        print(
            f"warning: mm-unidpo's task folder not found at {ours} (run from the repository root or set "
            "MM_UNIDPO_EVAL_TASKS); only lmms-eval's tasks and --include-path folders are available",
            file=sys.stderr,
        )
    args.include_path = [str(ours), *ns.include_path] if ours.is_dir() else list(ns.include_path)
    eval_logger.remove()
    eval_logger.add(sys.stderr, level=args.verbosity)
    os.environ["VERBOSITY"] = args.verbosity
    try:
        with _local_task_index(ns.tasks, args.include_path):
            results, _ = cli_evaluate_single(args)
    except SystemExit as stop:  # lmms-eval exits after listing tasks
        return int(stop.code or 0)
    if results is None:
        return 1
    print(make_table(results))
    summary = summarize_runs([output], png=os.path.join(output, "summary.png"))
    Path(output, "summary.md").write_text(summary, encoding="utf-8")
    print(f"results, summary.md and summary.png in {output}")
    return 0


def run_summarize(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="mm-unidpo eval lmms summarize",
        description="compare finished lmms-eval runs: markdown table + bar chart",
        formatter_class=HelpFormatter,
    )
    p.add_argument("runs", nargs="+", help="lmms-eval --output_path folders or *_results.json files")
    p.add_argument("--names", help="comma-separated run names (default: folder names)")
    p.add_argument("--out", default=None, help="write <out>.md and <out>.png (default: print the table only)")
    p.add_argument("--title", default=None)
    ns = p.parse_args(argv)
    names = ns.names.split(",") if ns.names else None
    png = f"{ns.out}.png" if ns.out else None
    text = summarize_runs(ns.runs, names=names, png=png, title=ns.title)
    if ns.out:
        Path(f"{ns.out}.md").parent.mkdir(parents=True, exist_ok=True)
        Path(f"{ns.out}.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "summarize":
        return run_summarize(argv[1:])
    if argv and argv[0] == "run":
        argv = argv[1:]
    return run_eval(argv)


if __name__ == "__main__":
    sys.exit(main())
