"""End-of-training report: `report.md` with the final metrics and PNG plots of the curves (loss, reward
margins, accuracies) and, for Uni-DPO, histograms of the per-pair weights early / middle / late in training.
A resumed run's report covers the whole run: the Trainer restores its log history from the checkpoint, and
the per-pair weights are saved in every checkpoint (`trainer.PAIR_DETAILS`)."""

from __future__ import annotations

import json
import os
from typing import Any

CURVES = (("loss", "loss"), ("rewards/margins", "reward margin"), ("rewards/accuracies", "reward accuracy"))


def _series(log_history: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    steps, values = [], []
    for entry in log_history:
        if key in entry and "step" in entry:
            steps.append(entry["step"])
            values.append(entry[key])
    return steps, values


def run_mean_loss(log_history: list[dict[str, Any]]) -> tuple[float, int] | None:
    """The mean training loss over every logged step of the run (a resumed run's history includes the steps
    before the resume; the Trainer's own `training_loss` counts only this session's): each logged loss
    weighted by the steps since the previous log. (mean, last step), or None if nothing was logged."""
    steps, values = _series(log_history, "loss")
    if not steps:
        return None
    spans = [step - before for step, before in zip(steps, [0, *steps[:-1]])]
    return sum(v * n for v, n in zip(values, spans)) / max(sum(spans), 1), steps[-1]


def plot_curves(log_history: list[dict[str, Any]], path: str) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = [(k, label) for k, label in CURVES if _series(log_history, k)[0]]
    if not present:
        return False
    fig, axes = plt.subplots(1, len(present), figsize=(4.2 * len(present), 3.2))
    axes = [axes] if len(present) == 1 else list(axes)
    for ax, (key, label) in zip(axes, present):
        steps, values = _series(log_history, key)
        ax.plot(steps, values, marker="o", markersize=3, label="train")
        eval_steps, eval_values = _series(log_history, "eval_" + key)
        if eval_steps:
            ax.plot(eval_steps, eval_values, marker="s", markersize=3, label="eval")
            ax.legend(fontsize=8)
        ax.set_title(label)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_weight_histograms(details: dict[str, list[float]], steps: dict[str, list[int]], path: str) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in ("weights/quality", "weights/perf", "balance/coef") if details.get(k)]
    if not keys:
        return False
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.2))
    axes = [axes] if len(keys) == 1 else list(axes)
    for ax, key in zip(axes, keys):
        values, at = details[key], steps[key]
        last = max(at) if at else 0
        # Thirds of training, drawn over each other, show how the weights move as the policy learns.
        for part, name in enumerate(("early", "middle", "late")):
            lo, hi = last * part / 3, last * (part + 1) / 3
            chunk = [v for v, s in zip(values, at) if lo <= s <= hi and (part == 0 or s > lo)]
            if chunk:
                ax.hist(chunk, bins=20, range=(0, max(1.0, max(values))), alpha=0.5, label=f"{name} (n={len(chunk)})")
        ax.set_title(key)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_report(
    output_dir: str,
    log_history: list[dict[str, Any]],
    details: dict[str, list[float]],
    detail_steps: dict[str, list[int]],
    summary: dict[str, Any],
    config: Any,
) -> str:
    os.makedirs(output_dir, exist_ok=True)
    curves = plot_curves(log_history, os.path.join(output_dir, "training_curves.png"))
    weights = plot_weight_histograms(details, detail_steps, os.path.join(output_dir, "pair_weights.png"))
    with open(os.path.join(output_dir, "pair_weights.json"), "w", encoding="utf-8") as f:
        json.dump({"values": details, "steps": detail_steps}, f)
    last_train: dict[str, Any] = next((e for e in reversed(log_history) if "loss" in e), {})
    whole = run_mean_loss(log_history)
    loss = f"{whole[0]:.4f} (logged steps 1-{whole[1]})" if whole else f"{summary.get('train_loss', float('nan')):.4f}"
    method = "4-bit QLoRA" if config.model.load_in_4bit else "LoRA" if config.lora.enabled else "full fine-tuning"
    skipped = summary.get("skipped_records") or "none"
    lines = [
        "# Training report",
        "",
        f"- model: `{config.model.name_or_path}` ({method})",
        f"- objective: `{config.loss.name}` {json.dumps(config.loss.params)}"
        + (f" of {json.dumps(config.loss.mixture)}" if config.loss.mixture else ""),
        f"- steps: {summary.get('global_step')}, mean train loss {loss}",
        f"- truncated pairs: {summary.get('truncated_pairs', 0)}; skipped records: {skipped}",
        "",
        "## Last logged metrics",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v:.4g} |" for k, v in sorted(last_train.items()) if isinstance(v, (int, float))]
    if curves:
        lines += ["", "## Curves", "", "![training curves](training_curves.png)"]
    if weights:
        lines += ["", "## Per-pair weights over training", "", "![pair weights](pair_weights.png)"]
    path = os.path.join(output_dir, "report.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path
