"""Compare lmms-eval runs: a markdown table and a bar chart (PNG) from their results JSON files.

    from mm_unidpo.evaluation.lmms.summary import summarize_runs
    print(summarize_runs(["runs/eval/base", "runs/eval/unidpo"], png="runs/eval/compare.png"))

A run is an lmms-eval ``--output_path`` folder (the newest ``*_results.json`` under it is used) or a
results file. Every numeric metric of every task is compared; the arrow after a metric gives its
direction (↑ higher is better, ↓ lower is better, · none: e.g. POPE's yes-ratio, 0.5 when unbiased)
and the best run of each row is in bold. Needs matplotlib only (drawn with the Agg canvas directly, so
the process's matplotlib backend is left alone); imports neither torch nor lmms-eval.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Run", "find_results_file", "load_results", "load_run", "plot_runs", "summarize_runs"]

# Metrics with no better direction (lmms-eval's JSON has to say True or False for every metric).
NO_DIRECTION = {"pope_yes_ratio"}


@dataclass
class Run:
    name: str
    path: str
    metrics: dict[tuple[str, str], float]  # (task, metric) -> value
    higher_is_better: dict[tuple[str, str], bool | None] = field(default_factory=dict)
    samples: dict[str, int] = field(default_factory=dict)  # task -> number of documents
    model_args: str = ""


def find_results_file(path: str | os.PathLike) -> Path:
    """``path`` if it is a file, else the newest ``*_results.json`` below it."""
    p = Path(path)
    if p.is_file():
        return p
    found = sorted(p.rglob("*_results.json"), key=lambda f: (f.name, f.stat().st_mtime))
    if not found:
        raise FileNotFoundError(f"no lmms-eval *_results.json under {str(p)!r}")
    return found[-1]


def load_results(path: str | os.PathLike) -> dict[str, Any]:
    """The lmms-eval results JSON of a run (a results file or an ``--output_path`` folder)."""
    with open(find_results_file(path), encoding="utf-8") as f:
        return json.load(f)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def load_run(path: str | os.PathLike, name: str | None = None) -> Run:
    file = find_results_file(path)
    results = load_results(file)
    metrics: dict[tuple[str, str], float] = {}
    for task, values in results.get("results", {}).items():
        for key, value in values.items():
            metric, _, filter_name = key.partition(",")
            number = _number(value)
            if number is None or "_stderr" in metric or not filter_name:
                continue
            label = metric if filter_name == "none" else f"{metric} [{filter_name}]"
            metrics[(task, label)] = number
    directions: dict[tuple[str, str], bool | None] = {}
    for task, table in results.get("higher_is_better", {}).items():
        for metric, higher in table.items():
            directions[(task, metric)] = None if metric in NO_DIRECTION else bool(higher)
    samples = {
        task: int(n.get("effective", n.get("original")) or 0)
        for task, n in results.get("n-samples", {}).items()
        if isinstance(n, dict)
    }
    default = Path(path).name if Path(path).is_dir() else file.parent.name
    return Run(
        name=name or default,
        path=str(file),
        metrics=metrics,
        higher_is_better=directions,
        samples=samples,
        model_args=str(results.get("config", {}).get("model_args", "")),
    )


def _direction(runs: Sequence[Run], key: tuple[str, str]) -> bool | None:
    base = key[1].split(" [", 1)[0]
    for run in runs:
        if (key[0], base) in run.higher_is_better:
            return run.higher_is_better[(key[0], base)]
    return None


def _arrow(direction: bool | None) -> str:
    return {True: "↑", False: "↓", None: "·"}[direction]


def _fmt(value: float | None) -> str:
    if value is None:
        return "–"
    if math.isnan(value):
        return "n/a"
    return f"{value:.3f}" if abs(value) < 1000 else f"{value:.1f}"


def _unique_names(runs: list[Run]) -> None:
    seen: dict[str, int] = {}
    for run in runs:
        if run.name in seen:
            seen[run.name] += 1
            run.name = f"{run.name} ({seen[run.name]})"
        else:
            seen[run.name] = 1


def _rows(runs: Sequence[Run]) -> list[tuple[str, str]]:
    keys: list[tuple[str, str]] = []
    for run in runs:
        keys.extend(k for k in run.metrics if k not in keys)
    return sorted(keys, key=lambda k: (k[0], keys.index(k)))


def markdown_table(runs: Sequence[Run]) -> str:
    header = "| task | metric | " + " | ".join(r.name for r in runs) + " |"
    lines = [header, "|" + "---|" * 2 + "---:|" * len(runs)]
    for task, metric in _rows(runs):
        direction = _direction(runs, (task, metric))
        values = [run.metrics.get((task, metric)) for run in runs]
        finite = [v for v in values if v is not None and not math.isnan(v)]
        best = None
        if direction is not None and len(finite) > 1 and len(set(finite)) > 1:
            best = max(finite) if direction else min(finite)
        cells = [f"**{_fmt(v)}**" if best is not None and v == best else _fmt(v) for v in values]
        n = {run.samples.get(task) for run in runs} - {None}
        task_label = f"{task} (n={n.pop()})" if len(n) == 1 else task
        lines.append(f"| {task_label} | {metric} {_arrow(direction)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_runs(runs: Sequence[Run], png: str | os.PathLike, title: str | None = None) -> Path:
    """Grouped bars, one panel per task, one bar per run for each metric."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    tasks = list(dict.fromkeys(task for task, _ in _rows(runs)))
    cols = min(3, len(tasks)) or 1
    rows = math.ceil(len(tasks) / cols) or 1
    fig = Figure(figsize=(5.2 * cols, 3.8 * rows + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    width = 0.8 / max(1, len(runs))
    colors = [f"C{i % 10}" for i in range(len(runs))]
    for ax, task in zip(axes, tasks):
        metrics = [m for t, m in _rows(runs) if t == task]
        for j, run in enumerate(runs):
            values = [run.metrics.get((task, m), math.nan) for m in metrics]
            xs = [i + (j - (len(runs) - 1) / 2) * width for i in range(len(metrics))]
            bars = ax.bar(xs, [0 if math.isnan(v) else v for v in values], width, label=run.name, color=colors[j])
            for bar, v in zip(bars, values):  # vertical labels once bars get narrow
                ax.annotate(
                    _fmt(v),
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    xytext=(0, 1),
                    textcoords="offset points",
                    rotation=90 if len(runs) > 2 else 0,
                )
        ax.set_xticks(range(len(metrics)))
        labels = [f"{m} {_arrow(_direction(runs, (task, m)))}" for m in metrics]
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
        top = max(
            [
                run.metrics.get((task, m), 0)
                for run in runs
                for m in metrics
                if not math.isnan(run.metrics.get((task, m), 0))
            ]
            + [0]
        )
        ax.set_ylim(0, (1.12 if top <= 1 else top * 1.2) if len(runs) > 2 else (1.05 if top <= 1 else top * 1.15))
        n = {run.samples.get(task) for run in runs} - {None}
        ax.set_title(f"{task} (n={n.pop()})" if len(n) == 1 else task, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes[len(tasks) :]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(runs), 6), fontsize=9)
    if title:
        fig.suptitle(title)
    out = Path(png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out


def summarize_runs(
    runs: Sequence[str | os.PathLike],
    *,
    names: Sequence[str] | None = None,
    png: str | os.PathLike | None = None,
    title: str | None = None,
) -> str:
    """Markdown comparing the runs (one column each); with ``png``, also a bar chart there."""
    if not runs:
        raise ValueError("summarize_runs needs at least one run")
    if names is not None and len(names) != len(runs):
        raise ValueError(f"{len(names)} names for {len(runs)} runs")
    loaded = [load_run(path, names[i] if names else None) for i, path in enumerate(runs)]
    _unique_names(loaded)
    text = markdown_table(loaded)
    legend = "\n".join(f"- **{r.name}**: `{r.path}`" + (f" ({r.model_args})" if r.model_args else "") for r in loaded)
    text = (
        (f"### {title}\n\n" if title else "")
        + text
        + "\n\n↑ higher is better, ↓ lower is better, · no direction (POPE yes-ratio: 0.5 = unbiased); "
        + "best in bold.\n\n"
        + legend
        + "\n"
    )
    if png is not None:
        plot_runs(loaded, png, title)
        text += f"\n![comparison]({Path(png).name})\n"
    return text
