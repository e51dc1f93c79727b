"""lmms-eval integration: our VLMs (base + optional LoRA adapter) as the lmms-eval model ``mm_unidpo``,
offline POPE / CHAIR / AMBER-format tasks (the repository's ``eval/`` folder), and a summary of runs.

    lmms-eval --model mm_unidpo --model_args pretrained=...,adapter=... --tasks mm_pope_sample --include_path eval
    mm-unidpo eval lmms --pretrained ... --adapter ... --tasks mm_pope_sample      (see .cli)
    summarize_runs(["runs/eval/base", "runs/eval/dpo"], png="runs/eval/compare.png")  # markdown table + chart

Modules: :mod:`.model` (the lmms-eval class; imports lmms-eval and torch), :mod:`.registration` (how
lmms-eval finds it), :mod:`.cli` (``main(argv) -> int``), :mod:`.summary` (results tables and charts;
needs neither lmms-eval nor torch). Nothing is imported here eagerly: lmms-eval imports
:mod:`.registration` while it builds its model registry.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MODEL_NAME", "MMUniDPO", "load_results", "main", "summarize_runs"]

MODEL_NAME = "mm_unidpo"


def __getattr__(name: str) -> Any:
    if name == "MMUniDPO":
        from .model import MMUniDPO  # lazy: lmms-eval and torch (this package must import light)

        return MMUniDPO
    if name in ("summarize_runs", "load_results"):
        from . import summary  # lazy: matplotlib

        return getattr(summary, name)
    if name == "main":
        from .cli import main  # lazy: lmms-eval imports this package while building its registry

        return main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
