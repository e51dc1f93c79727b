"""One seed of the VLM demo, stage by stage: world -> vision pretraining -> SFT -> on-policy preferences
-> DPO / Uni-DPO / AdaDPO (through `mm-unidpo train`) -> held-out POPE + CHAIR."""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mm_unidpo.models.loading import load_pretrained
from mm_unidpo.train.config import load_config
from mm_unidpo.train.run import train

from .evaluate import evaluate_model, pope_questions, write_tasks
from .image_reliance import blank_image_reliance
from .preferences import build_preferences
from .sft import ModelSize, NoiseConfig, build_model, sft_examples, train_sft
from .vision import pretrain_vision, probe_accuracy
from .world import WorldConfig, contact_sheet, make_scenes

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "demo"


@dataclass(frozen=True)
class Variant:
    """An alignment run: its label, its config (configs/demo/<config>.yaml) and overrides on top."""

    label: str
    config: str
    overrides: tuple[str, ...] = ()


_MDPO = ("--loss.params.image_term=mdpo", "--data.corruption=crop")
# The one list of alignment runs; `--methods` and `--study` pick from it.
VARIANTS: dict[str, Variant] = {
    "dpo": Variant("DPO", "dpo"),
    "unidpo": Variant("Uni-DPO", "unidpo"),
    "adadpo": Variant("AdaDPO", "adadpo"),
    # Uni-DPO's ablation (the paper's): without w_qual (η = 0: σ(0) = ½ for every pair, no quality
    # ranking), without w_perf (γ = 0: weight 1), without the calibrated NLL (λ = 0)
    "unidpo-no-wqual": Variant("Uni-DPO w/o w_qual", "unidpo", ("--loss.params.eta=0",)),
    "unidpo-no-wperf": Variant("Uni-DPO w/o w_perf", "unidpo", ("--loss.params.gamma=0",)),
    "unidpo-no-cnll": Variant("Uni-DPO w/o c-NLL", "unidpo", ("--loss.params.nll_weight=0",)),
    "dpo-mdpo": Variant("DPO + mDPO", "dpo", _MDPO),
    "unidpo-mdpo": Variant("Uni-DPO + mDPO", "unidpo", _MDPO),
}
METHODS = ("dpo", "unidpo", "adadpo")
STUDY = ("dpo", "unidpo", "unidpo-no-wqual", "unidpo-no-wperf", "unidpo-no-cnll", "dpo-mdpo", "unidpo-mdpo", "adadpo")


@dataclass
class DemoConfig:
    """Every size and setting of one demo run (the defaults are the embedded default)."""

    train_scenes: int = 3000
    preference_scenes: int = 800
    heldout_scenes: int = 500
    world: WorldConfig = field(default_factory=WorldConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    model: ModelSize = field(default_factory=ModelSize)
    vision_epochs: float = 4.0
    vision_lr: float = 3e-3
    sft_epochs: float = 2.0
    sft_lr: float = 1e-3
    sft_batch: int = 32
    question_pairs: int = 2  # (present, absent) yes/no pairs per SFT image, besides one caption
    samples: int = 6  # sampled captions per preference image
    temperature: float = 1.0
    methods: tuple[str, ...] = METHODS
    image_reliance: bool = False  # also ask POPE's present-object questions with a blank image (the study)
    train_overrides: tuple[str, ...] = ()  # extra `--section.key=value` for every alignment run
    batch_size: int = 64  # generation batch

    @classmethod
    def tiny(cls) -> DemoConfig:
        """A smoke-test run: every stage, a few steps each."""
        return cls(
            train_scenes=48,
            preference_scenes=12,
            heldout_scenes=12,
            vision_epochs=1,
            sft_epochs=1,
            sft_batch=16,
            question_pairs=1,
            samples=2,
            train_overrides=("--train.max_steps=2", "--train.per_device_train_batch_size=4", "--train.logging_steps=1"),
            batch_size=16,
        )


def stage(title: str) -> None:
    """A stage header on stdout (the progress bars go to stderr)."""
    print(f"\n== {title}", flush=True)


@contextlib.contextmanager
def log_stdout_to(log_path: Path) -> Iterator[None]:
    """Send the Trainer's per-step log dicts (printed to stdout) to a file; progress bars stay on stderr."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as f, contextlib.redirect_stdout(f):
        yield


def run_seed(config: DemoConfig, seed: int, out: Path, root: Path) -> dict[str, Any]:
    """Run every stage for one seed; writes under `out` (inside the report folder `root`) and returns
    this seed's results."""
    work = out / "work"
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 1)
        clock = now

    stage(
        f"[1/6] world (seed {seed}): {config.train_scenes} SFT, {config.preference_scenes} preference and "
        f"{config.heldout_scenes} held-out scenes"
    )
    train_scenes = make_scenes(config.train_scenes, seed * 1000 + 1, config.world, "train")
    pref_scenes = make_scenes(config.preference_scenes, seed * 1000 + 2, config.world, "pref")
    heldout = make_scenes(config.heldout_scenes, seed * 1000 + 3, config.world, "heldout")
    out.mkdir(parents=True, exist_ok=True)
    contact_sheet(heldout[:24], out / "world.png", columns=8, zoom=2)
    lap("world")

    stage("[2/6] vision pretraining (the CLIP stand-in) and SFT on noisy captions and answers")
    model, processor = build_model(config.model, seed)
    sizes = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "vision_parameters": sum(p.numel() for p in model.model.vision_tower.parameters()),
    }
    with log_stdout_to(work / "trainer_stdout.log"):
        probe, vision_log = pretrain_vision(
            model,
            processor,
            train_scenes,
            work / "vision",
            epochs=config.vision_epochs,
            batch_size=64,
            learning_rate=config.vision_lr,
            seed=seed,
        )
    probe_acc = probe_accuracy(probe, heldout, processor)
    print(
        f"vision probe on held-out quadrants: object {probe_acc['object_occupied']:.3f}, "
        f"colour {probe_acc['colour_occupied']:.3f}"
    )
    model.model.vision_tower.requires_grad_(False)  # as LLaVA-1.5: the pretrained tower stays frozen
    examples = sft_examples(train_scenes, seed * 1000 + 4, config.noise, config.question_pairs)
    with log_stdout_to(work / "trainer_stdout.log"):
        sft_log = train_sft(
            model,
            processor,
            examples,
            work / "sft",
            epochs=config.sft_epochs,
            batch_size=config.sft_batch,
            learning_rate=config.sft_lr,
            seed=seed,
        )
    sizes.update(
        sft_examples=len(examples),
        sft_steps=max([e.get("step", 0) for e in sft_log] or [0]),
        vision_steps=max([e.get("step", 0) for e in vision_log] or [0]),
    )
    print(f"SFT: {len(examples)} examples, {sizes['sft_steps']} steps; saved to {work / 'sft'}")
    lap("sft")

    stage(f"[3/6] on-policy preference data: {config.samples} sampled captions per image, judged 0-10")
    pref_path, pref_stats = build_preferences(
        model,
        processor,
        pref_scenes,
        work,
        samples=config.samples,
        temperature=config.temperature,
        seed=seed,
        batch_size=config.batch_size,
    )
    print(
        f"{pref_stats.caption_pairs} caption pairs ({pref_stats.caption_ties} ties skipped), "
        f"{pref_stats.yes_no_pairs} yes/no pairs; {pref_stats.hallucinating_samples:.0%} of sampled captions "
        f"hallucinate -> {pref_path}"
    )
    lap("preferences")

    stage("[4/6] evaluation of the SFT model on held-out scenes (lmms-eval, model mm_unidpo)")
    questions = pope_questions(heldout, train_scenes, seed * 1000 + 5)
    shutil.rmtree(out / "lmms_eval", ignore_errors=True)
    tasks = write_tasks(work / "lmms_tasks", heldout, questions)
    results = {
        "sft": evaluate_model(
            model,
            processor,
            heldout,
            tasks,
            batch_size=config.batch_size,
            name="sft",
            results_path=out / "lmms_eval" / "sft_results.json",
        )
    }
    if config.image_reliance:
        results["sft"]["image_reliance"] = blank_image_reliance(model, processor, heldout, questions, config.batch_size)
    del model, probe
    lap("eval_sft")

    runs: dict[str, Any] = {}
    for k, method in enumerate(config.methods):
        variant = VARIANTS[method]
        stage(
            f"[5/6] alignment {k + 1}/{len(config.methods)}: {variant.label} (LoRA, configs/demo/{variant.config}.yaml"
            + (f" {' '.join(variant.overrides)})" if variant.overrides else ")")
        )
        overrides = [
            *variant.overrides,
            f"--model.name_or_path={work / 'sft'}",
            f"--data.train={pref_path}",
            f"--train.output_dir={out / method}",
            f"--reference.cache_dir={work / 'reference_cache'}",
            f"--train.seed={seed}",
            f"--train.data_seed={seed}",
            *config.train_overrides,
        ]
        train_config = load_config(CONFIG_DIR / f"{variant.config}.yaml", overrides)
        shutil.rmtree(out / method, ignore_errors=True)  # no stale logs or adapters from an earlier run
        with log_stdout_to(out / method / "trainer_stdout.log"):
            summary = train(train_config)
        runs[method] = {
            "global_step": summary["global_step"],
            "train_loss": summary["train_loss"],
            "config": train_config.to_dict(),
        }
        tuned, tuned_processor = load_pretrained(
            str(work / "sft"), family="llava", adapter=summary["final_dir"], dtype="float32"
        )
        tuned = tuned.merge_and_unload()
        results[method] = evaluate_model(
            tuned,
            tuned_processor,
            heldout,
            tasks,
            batch_size=config.batch_size,
            name=method,
            results_path=out / "lmms_eval" / f"{method}_results.json",
        )
        if config.image_reliance:
            results[method]["image_reliance"] = blank_image_reliance(
                tuned, tuned_processor, heldout, questions, config.batch_size
            )
        del tuned
        lap(method)

    stage("[6/6] report")
    examples_for_report = [
        {
            "id": s.id,
            "objects": s.objects,
            "annotation": s.annotation(),
            "captions": {m: results[m]["captions"][i] for m in results},
        }
        for i, s in enumerate(heldout)
    ]
    return {
        "seed": seed,
        "run_root": "." if out == root else str(out.relative_to(root)),
        "methods": {m: {k: v for k, v in r.items() if k != "captions"} for m, r in results.items()},
        "examples": examples_for_report,
        "heldout_images": [s.image for s in heldout],
        "preference_data": {
            **pref_stats.summary(),
            "path": str(pref_path),
            "chosen_scores": pref_stats.chosen_scores,
            "rejected_scores": pref_stats.rejected_scores,
        },
        "vision_probe": probe_acc,
        "sizes": sizes,
        "logs": {"vision": vision_log, "sft": sft_log},
        "runs": runs,
        "timings": timings,
        "config": json.loads(json.dumps(asdict(config), default=str)),
    }
