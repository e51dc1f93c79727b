"""The demo report: `results.json`, `report.md` and the figures it shows.

Everything written here is computed from the run's results: the verdicts ("lowers CHAIR_i from ... to
...", "does not beat SFT on ...") compare measured numbers, nothing is written in.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from mm_unidpo.evaluation.lmms.summary import summarize_runs

from . import plots
from .evaluate import CHAIR_KEYS, POPE_KEYS, SPLITS
from .pipeline import VARIANTS

LABELS = {"sft": "SFT", **{name: variant.label for name, variant in VARIANTS.items()}}
# (section, key, label, higher is better)
HEADLINE = [
    ("pope", "accuracy", "POPE acc", True),
    ("pope", "f1", "POPE F1", True),
    ("pope", "yes_ratio", "POPE yes", None),
    ("pope", "ambiguous_ratio", "POPE non-answers", False),
    ("pope_splits.adversarial", "accuracy", "POPE adv acc", True),
    ("pope_splits.adversarial", "yes_ratio", "POPE adv yes", None),
    ("chair", "chair_s", "CHAIR_s", False),
    ("chair", "chair_i", "CHAIR_i", False),
    ("chair", "recall", "recall", True),
]


def _get(method: dict[str, Any], section: str, key: str) -> float | None:
    node: Any = method
    for part in section.split("."):
        node = node.get(part, {}) if isinstance(node, dict) else {}
    value = node.get(key) if isinstance(node, dict) else None
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def aggregate(per_seed: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Mean and std over seeds of every metric, in the results.json layout ("methods" and "std")."""
    methods = list(per_seed[0]["methods"])
    mean: dict[str, Any] = {}
    std: dict[str, Any] = {}
    for m in methods:
        mean[m], std[m] = {}, {}
        keys: tuple[str, ...] = (*POPE_KEYS, "ambiguous_ratio")
        layout = [("pope", keys), ("chair", (*CHAIR_KEYS, "companion_share"))] + [
            (f"pope_splits.{s}", keys) for s in SPLITS
        ]
        for section, keys in layout:
            for key in keys:
                values = [v for r in per_seed if (v := _get(r["methods"][m], section, key)) is not None]
                _put(mean[m], section, key, float(np.mean(values)) if values else None)
                _put(std[m], section, key, float(np.std(values)) if values else None)
        values = [r["methods"][m]["judge_caption_score"] for r in per_seed]
        mean[m]["judge_caption_score"], std[m]["judge_caption_score"] = float(np.mean(values)), float(np.std(values))
    return mean, std


def _put(tree: dict[str, Any], section: str, key: str, value: Any) -> None:
    for part in section.split("."):
        tree = tree.setdefault(part, {})
    tree[key] = value


def _fmt(value: float | None, spread: float | None = None, seeds: int = 1) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f} ± {spread:.3f}" if seeds > 1 and spread is not None else f"{value:.3f}"


def verdicts(mean: dict[str, Any], per_seed: list[dict[str, Any]]) -> list[str]:
    """One computed sentence per aligned method: does it beat SFT on the two headline numbers (POPE
    accuracy up and CHAIR_i down), and what else got better or worse."""
    out = []
    base = mean["sft"]
    for m in [k for k in mean if k != "sft"]:
        better: list[str] = []
        worse: list[str] = []
        for section, key, label, higher in HEADLINE:
            if higher is None:
                continue
            a, b = _get(base, section, key), _get(mean[m], section, key)
            if a is None or b is None or abs(b - a) < 0.005:
                continue
            (better if (b > a) == higher else worse).append(f"{label} {a:.3f} → {b:.3f}")
        wins = sum(_beats(r["methods"]["sft"], r["methods"][m]) for r in per_seed)
        seeds = f"; in {wins} of {len(per_seed)} seeds" if len(per_seed) > 1 else ""
        head = (
            f"**{LABELS[m]} beats SFT** (higher POPE accuracy and lower CHAIR_i{seeds})"
            if _beats(base, mean[m])
            else f"**{LABELS[m]} does not beat SFT** (that takes both higher POPE accuracy and lower CHAIR_i{seeds})"
        )
        out.append(f"- {head}. Better: {', '.join(better) or 'nothing'}. Worse: {', '.join(worse) or 'nothing'}.")
    return out


def _beats(base: dict[str, Any], method: dict[str, Any]) -> bool:
    pa, pb = _get(base, "pope", "accuracy"), _get(method, "pope", "accuracy")
    ca, cb = _get(base, "chair", "chair_i"), _get(method, "chair", "chair_i")
    if pa is None or pb is None or ca is None or cb is None:
        return False
    return pb > pa and cb < ca


def table(mean: dict[str, Any], std: dict[str, Any], seeds: int) -> list[str]:
    header = "| method | " + " | ".join(label for _, _, label, _ in HEADLINE) + " | judge score |"
    lines = [header, "|" + "---|" * (len(HEADLINE) + 2)]
    for m in mean:
        cells = [_fmt(_get(mean[m], s, k), _get(std[m], s, k), seeds) for s, k, _, _ in HEADLINE]
        cells.append(_fmt(mean[m]["judge_caption_score"], std[m]["judge_caption_score"], seeds))
        lines.append(f"| {LABELS[m]} | " + " | ".join(cells) + " |")
    return lines


def split_table(mean: dict[str, Any], std: dict[str, Any], seeds: int) -> list[str]:
    lines = [
        "| method | " + " | ".join(f"{s} acc | {s} F1 | {s} yes" for s in SPLITS) + " |",
        "|" + "---|" * (1 + 3 * len(SPLITS)),
    ]
    for m in mean:
        cells = []
        for s in SPLITS:
            cells += [
                _fmt(_get(mean[m], f"pope_splits.{s}", k), _get(std[m], f"pope_splits.{s}", k), seeds)
                for k in ("accuracy", "f1", "yes_ratio")
            ]
        lines.append(f"| {LABELS[m]} | " + " | ".join(cells) + " |")
    return lines


def write_report(out: Path, per_seed: list[dict[str, Any]], seconds: float, argv: list[str]) -> Path:
    """results.json, the figures and report.md under `out`; returns the report's path."""
    mean, std = aggregate(per_seed)
    first = per_seed[0]
    seeds = len(per_seed)
    runs = out / first["run_root"]  # the first seed's run folders (the only ones with one seed)
    prefix = "" if first["run_root"] == "." else first["run_root"] + "/"
    results = {
        "methods": mean
        if seeds > 1
        else {
            m: {k: v for k, v in r.items() if k in ("pope", "pope_splits", "chair", "judge_caption_score")}
            for m, r in first["methods"].items()
        },
        "seconds": round(seconds, 1),
        "config": first["config"],
        "seeds": [r["seed"] for r in per_seed],
        "per_seed": [
            {
                "seed": r["seed"],
                "methods": r["methods"],
                "timings": r["timings"],
                "sizes": r["sizes"],
                "preference_data": {
                    k: v for k, v in r["preference_data"].items() if k not in ("chosen_scores", "rejected_scores")
                },
                "vision_probe": r["vision_probe"],
                "runs": {m: {k: v for k, v in run.items() if k != "config"} for m, run in r["runs"].items()},
            }
            for r in per_seed
        ],
        "command": "mm-unidpo demo " + " ".join(argv),
    }
    if seeds > 1:
        results["std"] = std
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    # Every held-out caption of every method (first seed), for a look beyond the gallery.
    (out / "captions.json").write_text(json.dumps(first["examples"], indent=1) + "\n", encoding="utf-8")

    figures = {
        "metrics": plots.metric_bars(mean, std if seeds > 1 else None, out / "metrics.png", LABELS),
        "splits": plots.pope_splits(mean, std if seeds > 1 else None, out / "pope_splits.png", LABELS),
        "examples": plots.example_gallery(first["heldout_images"], first["examples"], out / "examples.png", LABELS),
        "training": plots.training_curves(
            runs, [m for m in first["methods"] if m != "sft"], out / "training.png", LABELS
        ),
        "weights": plots.pair_weights(runs, out / "weights.png", LABELS),
        "preferences": plots.preference_scores(first["preference_data"], out / "preferences.png"),
        "sft": plots.sft_curves(first["logs"], out / "sft_curves.png"),
    }
    lmms_files = [runs / "lmms_eval" / f"{m}_results.json" for m in first["methods"]]
    if all(f.is_file() for f in lmms_files):  # lmms-eval's own numbers, as `mm-unidpo eval lmms summarize` shows them
        summary = summarize_runs(
            lmms_files,
            names=[LABELS[m] for m in first["methods"]],
            title=f"lmms-eval results, seed {first['seed']} (model mm_unidpo)",
        )
        (runs / "lmms_eval" / "summary.md").write_text(summary, encoding="utf-8")
    lines = _markdown(mean, std, per_seed, figures, prefix, seconds, results["command"])
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return report


def _image(name: str | None, alt: str) -> list[str]:
    return [f"![{alt}]({name})", ""] if name else []


def _headline(mean: dict[str, Any]) -> str:
    """How the SFT model hallucinates, in measured numbers."""
    sft = mean["sft"]
    parts = [f"{_get(sft, 'chair', 'chair_s'):.0%} of its held-out captions name an object that is not there"]
    share = _get(sft, "chair", "companion_share")
    if share is not None:
        parts[0] += f" ({share:.0%} of those objects are the usual companion of one that is)"
    adv, rnd = _get(sft, "pope_splits.adversarial", "yes_ratio"), _get(sft, "pope_splits.random", "yes_ratio")
    if adv is not None and rnd is not None:
        parts.append(
            f'on POPE it answers "yes" {adv:.0%} of the time on the adversarial (co-occurrence) split '
            f"against {rnd:.0%} on the random split (0.5 is unbiased)"
        )
    return "The SFT model: " + "; ".join(parts) + "."


def _markdown(
    mean: dict[str, Any],
    std: dict[str, Any],
    per_seed: list[dict[str, Any]],
    figures: dict[str, Any],
    prefix: str,
    seconds: float,
    command: str,
) -> list[str]:
    first, seeds = per_seed[0], len(per_seed)
    pref, probe, cfg, sizes = first["preference_data"], first["vision_probe"], first["config"], first["sizes"]
    aligned = [m for m in first["methods"] if m != "sft"]
    seed_text = (
        f"mean ± std over {seeds} seeds ({', '.join(str(r['seed']) for r in per_seed)})"
        if seeds > 1
        else f"seed {first['seed']}; `mm-unidpo demo --seeds 3` gives mean ± std"
    )
    model = cfg["model"]
    return [
        "# mm-unidpo demo: aligning a small VLM against object hallucination",
        "",
        f"A LLaVA-architecture VLM (transformers' `LlavaForConditionalGeneration`, {sizes['parameters'] / 1e6:.2f}M "
        "parameters) learns to describe synthetic scenes from noisy, web-style text and picks up the captions' habit "
        "of naming an object's usual companion when it is not there. It is then aligned on its own judged samples "
        f"with {', '.join(LABELS[m] for m in aligned)} (same data, LoRA, budget and seed). Every number is measured "
        f"on {cfg['heldout_scenes']} held-out scenes that nothing was tuned on ({seed_text}).",
        "",
        _headline(mean),
        "",
        "## Verdict",
        "",
        *verdicts(mean, per_seed),
        "",
        "## Results",
        "",
        *table(mean, std, seeds),
        "",
        "POPE numbers are averaged over the random, popular and adversarial splits; *POPE yes* is the share of "
        '"yes" answers (0.5 is unbiased: every split is balanced); *non-answers* are answers that are neither '
        "yes nor no (counted as wrong). CHAIR_s: captions with a hallucinated object; CHAIR_i: hallucinated / "
        "mentioned objects; recall: ground-truth objects mentioned; judge score: the rule judge's 0-10 caption "
        "score, the one the preference pairs were built with.",
        "",
        *_image(figures["metrics"], "metrics"),
        "### POPE by split",
        "",
        *split_table(mean, std, seeds),
        "",
        *_image(figures["splits"], "POPE splits"),
        "## What the models say",
        "",
        "Greedy captions of held-out scenes; every caption of every method is in [captions.json](captions.json).",
        "",
        *_image(figures["examples"], "examples"),
        "## Training",
        "",
        "Alignment runs through `mm-unidpo train` with "
        + ", ".join(f"`configs/demo/{m}.yaml`" for m in aligned)
        + " (LoRA r=16 on every language-model linear layer, the SFT model with the adapter off as reference, "
        "reference log-probs computed once and shared). Per-run reports: "
        + ", ".join(f"[{LABELS[m]}]({prefix}{m}/report.md)" for m in aligned)
        + ".",
        "",
        *_image(figures["training"], "alignment curves"),
        *_image(figures["weights"], "per-pair weights"),
        "## How the demo is built",
        "",
        *_image(f"{prefix}world.png", "world"),
        f"**World.** {cfg['train_scenes']} SFT, {cfg['preference_scenes']} preference and {cfg['heldout_scenes']} "
        f"held-out scenes of {cfg['world']['image_size']}x{cfg['world']['image_size']} pixels: 8 shapes x 6 colours, "
        "1-4 objects, one per quadrant, on a noisy textured background with clutter lines. Every object has a "
        f"companion that joins it with probability {cfg['world']['p_partner']} (star+moon, square+triangle, "
        "circle+cross, ring+diamond); other pairs meet only by chance.",
        "",
        f"**Model.** `LlavaForConditionalGeneration`: CLIP vision tower ({model['vision_layers']} layers, width "
        f"{model['vision_hidden']}, {model['patch_size']}-pixel patches: 4 image tokens), 2-layer MLP projector, Llama "
        f"language model ({model['text_layers']} layers, width {model['text_hidden']}); "
        f"{sizes['parameters'] / 1e6:.2f}M parameters, random init. The vision tower is pretrained first "
        f"({sizes['vision_steps']} steps naming each quadrant's object and colour: the stand-in for CLIP) and frozen; "
        f"then SFT trains projector and language model ({sizes['sft_examples']} examples, {sizes['sft_steps']} steps, "
        "`transformers.Trainer`).",
        "",
        f"**SFT text noise.** A caption names the absent companion of an object with probability "
        f"{cfg['noise']['caption_partner']} and drops an object with {cfg['noise']['caption_omit']}; "
        f'"Is there a <companion> in the image?" is answered "Yes." with {cfg["noise"]["answer_partner_yes"]} '
        f"when the companion is absent. The pretrained tower's quadrant heads name the objects of held-out scenes "
        f"with accuracy {probe['object_occupied']:.3f} (colours {probe['colour_occupied']:.3f}): the model can see "
        "what is there.",
        "",
        *_image(figures["sft"], "SFT curves"),
        f"**Preference data** (`{Path(pref['path']).name}`, our JSONL format). {pref['samples_per_image']} captions "
        f"sampled at temperature {cfg['temperature']} per image, scored 0-10 by the rule judge "
        "(`mm_unidpo.demo.judge:score_response`), best vs worst: "
        f"{pref['caption_pairs']} caption pairs ({pref['caption_ties']} images skipped: all samples tied"
        + (f"; {pref['empty_samples']} empty samples dropped" if pref.get("empty_samples") else "")
        + "); "
        f"{pref['hallucinating_samples']:.0%} of the samples hallucinate; mean score chosen "
        f"{pref['mean_chosen_score']:.2f}, rejected {pref['mean_rejected_score']:.2f}. Plus {pref['yes_no_pairs']} "
        "yes/no pairs on the same images (the correct answer chosen).",
        "",
        *_image(figures["preferences"], "preference scores"),
        "## Run",
        "",
        f"- {seconds / 60:.1f} min wall time on CPU; stages of seed {first['seed']}: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in first["timings"].items()),
        "- evaluation: lmms-eval (`simple_evaluate`) with our plugin model `mm_unidpo` around each model, on the "
        "held-out scenes written as local tasks that include `eval/_pope.yaml` / `eval/_chair.yaml` (greedy "
        f"decoding); lmms-eval's results JSON per model and their [summary]({prefix}lmms_eval/summary.md) in "
        f"`{prefix}lmms_eval/`",
        f"- command: `{command.strip()}`; every number in [results.json](results.json)",
    ]
