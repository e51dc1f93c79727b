"""The demo report's figures (matplotlib, Agg; the example gallery with PIL). Each function writes one
PNG and returns its file name, or None when there was nothing to draw."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .evaluate import SPLITS
from .judge import MATCHER

COLOURS = {"sft": "#8c8c8c", "dpo": "#4c72b0", "unidpo": "#dd8452", "adadpo": "#55a868"}
GREEN, RED, ORANGE = (20, 140, 40), (210, 30, 30), (230, 130, 0)


def _save(fig: Any, path: Path, tight: bool = True) -> str:
    """Write the figure and free it; returns the file name the report links to."""
    import matplotlib.pyplot as plt

    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path.name


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False})
    return plt


def _value(tree: dict[str, Any] | None, *path: str) -> float:
    node: Any = tree or {}
    for part in path:
        node = node.get(part, {}) if isinstance(node, dict) else {}
    return float(node) if isinstance(node, (int, float)) else float("nan")


def _grouped(
    ax, groups: list[str], methods: list[str], values, errors, labels: dict[str, str], fmt: str = "{:.2f}"
) -> None:
    width = 0.8 / len(methods)
    x = np.arange(len(groups))
    for j, m in enumerate(methods):
        offset = x + (j - (len(methods) - 1) / 2) * width
        bars = ax.bar(
            offset,
            values[j],
            width * 0.92,
            color=COLOURS.get(m, "#999"),
            label=labels.get(m, m),
            yerr=errors[j] if errors is not None else None,
            capsize=2,
            error_kw={"lw": 0.8},
        )
        spreads = errors[j] if errors is not None else [0.0] * len(values[j])
        for bar, v, e in zip(bars, values[j], spreads):
            if np.isfinite(v):
                top = bar.get_height() + (e if np.isfinite(e) else 0.0)  # above the error bar
                ax.text(
                    bar.get_x() + bar.get_width() / 2,
                    top + 0.01,
                    fmt.format(v),
                    ha="center",
                    va="bottom",
                    fontsize=6.5,
                    rotation=90 if len(methods) > 3 and len(groups) > 1 else 0,
                )
    ax.set_xticks(x, groups)
    ax.grid(axis="y", alpha=0.3)


def _legend_below(fig, ax, n: int) -> None:
    handles, names = ax.get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=n, frameon=False, fontsize=8.5)
    fig.tight_layout(rect=(0, 0.07, 1, 1))


def metric_bars(mean: dict[str, Any], std: dict[str, Any] | None, path: Path, labels: dict[str, str]) -> str:
    plt = _plt()
    methods = list(mean)
    panels = [
        (
            "POPE (mean of 3 splits) — higher is better",
            [("pope", "accuracy", "accuracy"), ("pope", "f1", "F1"), ("pope_splits", "adversarial", "adversarial acc")],
        ),
        (
            "captions — CHAIR lower is better, recall higher",
            [("chair", "chair_s", "CHAIR_s"), ("chair", "chair_i", "CHAIR_i"), ("chair", "recall", "recall")],
        ),
    ]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, (title, items) in zip(axes, panels):

        def pick(tree, item):
            section, key, _ = item
            return (
                _value(tree, "pope_splits", "adversarial", "accuracy")
                if key == "adversarial"
                else _value(tree, section, key)
            )

        values = [[pick(mean[m], it) for it in items] for m in methods]
        errors = [[pick(std[m], it) for it in items] for m in methods] if std else None
        _grouped(ax, [it[2] for it in items], methods, values, errors, labels)
        ax.set_title(title)
        ax.set_ylim(0, 1.12)
    _legend_below(fig, axes[0], len(methods))
    return _save(fig, path, tight=False)  # _legend_below laid the figure out


def pope_splits(mean: dict[str, Any], std: dict[str, Any] | None, path: Path, labels: dict[str, str]) -> str:
    plt = _plt()
    methods = list(mean)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for ax, key, title in (
        (axes[0], "accuracy", "POPE accuracy by split"),
        (axes[1], "yes_ratio", 'share of "yes" answers (0.5 = unbiased)'),
    ):
        values = [[_value(mean[m], "pope_splits", s, key) for s in SPLITS] for m in methods]
        errors = [[_value(std[m], "pope_splits", s, key) for s in SPLITS] for m in methods] if std else None
        _grouped(ax, list(SPLITS), methods, values, errors, labels)
        ax.set_title(title)
        ax.set_ylim(0, 1.12)
    axes[1].axhline(0.5, color="black", lw=0.8, ls="--")
    _legend_below(fig, axes[0], len(methods))
    return _save(fig, path, tight=False)  # _legend_below laid the figure out


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType sizes
        return ImageFont.load_default()


def example_gallery(
    images: list[Image.Image], examples: list[dict[str, Any]], path: Path, labels: dict[str, str], rows: int = 8
) -> str:
    """Held-out scenes with every method's greedy caption; object words coloured by the ground truth.
    Shown: the first scenes where the SFT caption hallucinates (3/4 of the rows), then the first where it
    does not."""
    bad = [
        i
        for i, e in enumerate(examples)
        if any(o not in e["objects"] for o in MATCHER.objects_in(e["captions"]["sft"]))
    ]
    good = [i for i in range(len(examples)) if i not in bad]
    n_bad = min(len(bad), rows * 3 // 4)
    chosen = bad[:n_bad] + good[: rows - n_bad]
    zoom, pad, line, top = 128, 10, 22, 30
    methods = list(examples[0]["captions"]) if examples else []
    font = _font(15)
    width = zoom + 3 * pad + 760
    height = top + len(chosen) * (zoom + pad) + pad
    sheet = Image.new("RGB", (width, max(height, 1)), "white")
    draw = ImageDraw.Draw(sheet)
    x = pad
    for text, colour in (
        (
            f"Held-out scenes: the first {n_bad} where the SFT caption hallucinates, then the first "
            f"{len(chosen) - n_bad} where it does not.   ",
            (0, 0, 0),
        ),
        ("in the image", GREEN),
        ("   ", (0, 0, 0)),
        ("not in the image", RED),
        ("   ", (0, 0, 0)),
        ("repeated", ORANGE),
    ):
        draw.text((x, 8), text, fill=colour, font=font)
        x += int(draw.textlength(text, font=font))
    for r, i in enumerate(chosen):
        y = top + pad + r * (zoom + pad)
        sheet.paste(images[i].resize((zoom, zoom), Image.Resampling.NEAREST), (pad, y))
        draw.text(
            (zoom + 2 * pad, y), "truth: " + examples[i]["annotation"].replace(";", ", "), fill=(60, 60, 60), font=font
        )
        for j, m in enumerate(methods):
            x = zoom + 2 * pad
            ty = y + line * (j + 1) + 4
            draw.text((x, ty), f"{labels.get(m, m)}:", fill=(0, 0, 0), font=font)
            x += 78
            named: set[str] = set()
            for word in examples[i]["captions"][m].split() or ["(empty)"]:
                if x + draw.textlength(word + " …", font=font) > width - pad:  # degenerate output: cut
                    draw.text((x, ty), "…", fill=(0, 0, 0), font=font)
                    break
                name = MATCHER.canonical(word.strip(".,").lower())
                colour = (
                    (0, 0, 0)
                    if name is None
                    else RED
                    if name not in examples[i]["objects"]
                    else ORANGE
                    if name in named
                    else GREEN
                )
                named.add(name or "")
                draw.text((x, ty), word, fill=colour, font=font)
                x += int(draw.textlength(word + " ", font=font))
    sheet.save(path)
    return path.name


def _history(run_dir: Path) -> list[dict[str, Any]]:
    state = run_dir / "trainer_state.json"
    return json.loads(state.read_text())["log_history"] if state.is_file() else []


def training_curves(out: Path, methods: list[str], path: Path, labels: dict[str, str]) -> str | None:
    plt = _plt()
    keys = [
        ("loss", "training loss (each objective on its own scale)"),
        ("rewards/margins", "reward margin"),
        ("rewards/accuracies", "reward accuracy"),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    drawn = False
    for m in methods:
        history = [e for e in _history(out / m) if "loss" in e and "step" in e]
        for ax, (key, _) in zip(axes, keys):
            points = [(e["step"], e[key]) for e in history if key in e]
            if points:
                ax.plot(*zip(*points), color=COLOURS.get(m), label=labels.get(m, m), lw=1.4)
                drawn = True
    if not drawn:
        plt.close(fig)
        return None
    for ax, (_, title) in zip(axes, keys):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return _save(fig, path)


def pair_weights(out: Path, path: Path, labels: dict[str, str]) -> str | None:
    """Uni-DPO's quality and performance weights and AdaDPO's balance coefficient, per pair, early vs late."""
    plt = _plt()
    panels = [
        ("unidpo", "weights/quality", "Uni-DPO quality weight σ(η·ΔS)"),
        ("unidpo", "weights/perf", "Uni-DPO performance weight"),
        ("adadpo", "balance/coef", "AdaDPO balance coefficient c_w"),
    ]
    present = []
    for method, key, title in panels:
        file = out / method / "pair_weights.json"
        if file.is_file():
            data = json.loads(file.read_text())
            if data["values"].get(key):
                present.append((method, key, title, data["values"][key], data["steps"][key]))
    if not present:
        return None
    fig, axes = plt.subplots(1, len(present), figsize=(4.2 * len(present), 3.2))
    axes = np.atleast_1d(axes)
    for ax, (method, key, title, values, steps) in zip(axes, present):
        values, steps = np.asarray(values), np.asarray(steps)
        half = steps.max() / 2 if len(steps) else 0
        # quality = sigmoid(eta * gap) >= 0.5 for chosen >= rejected; the balance coefficient is clipped at C.
        span = (0.5, 1.0) if key == "weights/quality" else (0.0, max(1.0, float(values.max())))
        early, late = values[steps <= half], values[steps > half]
        if len(early):
            ax.hist(
                early,
                bins=25,
                range=span,
                color=COLOURS.get(method),
                alpha=0.35,
                label=f"first half of training (n={len(early)})",
            )
        if len(late):
            ax.hist(
                late,
                bins=25,
                range=span,
                color=COLOURS.get(method),
                histtype="step",
                lw=1.8,
                label=f"second half (n={len(late)})",
            )
        ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("weight")
        ax.legend(fontsize=7)
    return _save(fig, path)


def preference_scores(pref: dict[str, Any], path: Path) -> str | None:
    plt = _plt()
    chosen, rejected = pref.get("chosen_scores") or [], pref.get("rejected_scores") or []
    if not chosen:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 3.0))
    bins = np.linspace(0, 10, 21)
    ax.hist(rejected, bins=bins, alpha=0.7, color="#c44e52", label=f"rejected (mean {np.mean(rejected):.1f})")
    ax.hist(chosen, bins=bins, alpha=0.7, color="#55a868", label=f"chosen (mean {np.mean(chosen):.1f})")
    ax.set_xlabel("judge score of the caption (0-10)")
    ax.set_ylabel("caption pairs")
    ax.set_title("on-policy caption pairs: best vs worst of the samples")
    ax.legend(fontsize=8)
    return _save(fig, path)


def sft_curves(logs: dict[str, list[dict[str, Any]]], path: Path) -> str:
    plt = _plt()
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    fig, axes = plt.subplots(1, 2, figsize=(9, 2.8))
    for ax, (name, title) in zip(
        axes, (("vision", "vision pretraining loss (quadrant object + colour)"), ("sft", "SFT loss (answer tokens)"))
    ):
        points = [(e["step"], e["loss"]) for e in logs.get(name, []) if "loss" in e and "step" in e]
        if points:
            ax.plot(*zip(*points), color="#4c72b0", lw=1.4)
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    return _save(fig, path)
