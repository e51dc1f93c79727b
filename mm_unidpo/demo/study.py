"""`mm-unidpo demo --study`: does the image matter, and what does each part of Uni-DPO do?

Every variant of `pipeline.STUDY` (SFT, DPO, Uni-DPO and its ablations, the mDPO image term on DPO and
Uni-DPO, AdaDPO) on the same SFT model, preference data and budget per seed; over the seeds, mean ± std
of POPE (accuracy, F1), CHAIR (s, i) and the image-reliance measure (image_reliance.py). Writes
`study.md` (the table), `study.png` (the same numbers as bars with the std) and `study.json`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from .plots import _plt, _save
from .report import LABELS, _get

# (section, key, label, higher is better)
COLUMNS = [
    ("pope", "accuracy", "POPE acc", True),
    ("pope", "f1", "POPE F1", True),
    ("chair", "chair_s", "CHAIR_s", False),
    ("chair", "chair_i", "CHAIR_i", False),
    ("image_reliance", "blank_no_rate", "blank-image “no”", True),
]


def study_numbers(per_seed: list[dict[str, Any]]) -> dict[str, dict[str, list[float]]]:
    """Per method and column, the value of each seed (those that have it)."""
    out: dict[str, dict[str, list[float]]] = {}
    for method in per_seed[0]["methods"]:
        out[method] = {}
        for section, key, label, _ in COLUMNS:
            values = [_get(r["methods"][method], section, key) for r in per_seed]
            out[method][label] = [v for v in values if v is not None and not math.isnan(v)]
    return out


def write_study(out: Path, per_seed: list[dict[str, Any]], seconds: float, command: str) -> Path:
    numbers = study_numbers(per_seed)
    seeds = [r["seed"] for r in per_seed]
    (out / "study.json").write_text(
        json.dumps({"seeds": seeds, "seconds": round(seconds, 1), "command": command, "values": numbers}, indent=2)
        + "\n",
        encoding="utf-8",
    )
    labels = [label for _, _, label, _ in COLUMNS]
    arrows = ["↑" if higher else "↓" for *_, higher in COLUMNS]
    lines = [
        "# Does the image matter? (`mm-unidpo demo --study`)",
        "",
        f"Mean ± std over seeds {', '.join(map(str, seeds))}; {seconds / 60:.1f} min; command: `{command}`.",
        "Blank-image “no”: the share of POPE present-object questions that the model answers “No.” when asked "
        "with a blank grey image instead (1 = it reads the image).",
        "",
        "| method | " + " | ".join(f"{label} {arrow}" for label, arrow in zip(labels, arrows)) + " |",
        "|" + "---|" * (len(labels) + 1),
    ]
    for method, columns in numbers.items():
        cells = [_cell(columns[label]) for label in labels]
        lines.append(f"| {LABELS.get(method, method)} | " + " | ".join(cells) + " |")
    lines += ["", "![study](study.png)", ""]
    _plot(numbers, labels, out / "study.png")
    path = out / "study.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _cell(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def _plot(numbers: dict[str, dict[str, list[float]]], labels: list[str], path: Path) -> None:
    methods = list(numbers)
    fig, axes = _plt().subplots(1, len(labels), figsize=(3.2 * len(labels), 3.6), sharey=False)
    for ax, label in zip(axes, labels):
        means = [np.mean(numbers[m][label]) if numbers[m][label] else np.nan for m in methods]
        stds = [np.std(numbers[m][label]) if numbers[m][label] else 0.0 for m in methods]
        ax.bar(range(len(methods)), means, yerr=stds, capsize=3, color="#4c72b0")
        ax.set_xticks(range(len(methods)), [LABELS.get(m, m) for m in methods], rotation=70, fontsize=7)
        ax.set_title(label, fontsize=9)
    _save(fig, path)
