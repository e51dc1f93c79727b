"""On-policy preference data: the SFT model's own captions, judged and paired by `mm_unidpo.onpolicy`.

The same three steps as `mm-unidpo generate | judge | pairs`, in process on the loaded SFT model: the
preference images and their prompts (with the ground-truth objects) are written as a prompts file
(`prompts.jsonl`), the model samples several captions per image (`samples.jsonl`), the object judge on
the demo world's vocabulary scores each against the ground truth (0-10, `scored.jsonl`) and the best and
the worst of each image become a pair with their scores (an image whose samples all tie gives no pair
and is counted). Yes/no questions about the same images add pairs whose chosen response is the correct
answer. Everything is written in our JSONL format (`save_preference_data`), images as PNGs beside it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mm_unidpo.data import PreferenceRecord, save_preference_data
from mm_unidpo.onpolicy import (
    GenerateConfig,
    HFSampler,
    PairConfig,
    build_pairs,
    generate_samples,
    judge_samples,
    judged_means,
    load_prompts,
    make_judge,
    record_of,
)

from .judge import MATCHER, yes_no_score
from .sft import question_objects
from .world import CAPTION_PROMPT, COLOURS, NO, OBJECTS, QUESTION, YES, Scene, save_scene


@dataclass
class PreferenceStats:
    images: int = 0
    samples_per_image: int = 0
    caption_pairs: int = 0
    caption_ties: int = 0  # images whose samples all scored the same: no pair
    empty_samples: int = 0  # sampled captions that were empty (dropped before pairing)
    yes_no_pairs: int = 0
    mean_sample_score: float = 0.0
    mean_chosen_score: float = 0.0
    mean_rejected_score: float = 0.0
    hallucinating_samples: float = 0.0  # share of sampled captions that name an absent object
    chosen_scores: list[float] = field(default_factory=list)
    rejected_scores: list[float] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # generate, judge, pairs

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("chosen_scores")
        out.pop("rejected_scores")
        return out


def write_prompts(scenes: list[Scene], work_dir: Path) -> Path:
    """The caption prompts as a prompts file: one image each, its ground truth as `objects`."""
    image_dir = work_dir / "images" / "preference"
    path = work_dir / "prompts.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for scene in scenes:
            row = {
                "id": scene.id,
                "prompt": f"<image>\n{CAPTION_PROMPT}",
                "images": [f"images/preference/{save_scene(scene, image_dir)}"],
                "objects": [t.phrase() for t in scene.things],
            }
            f.write(json.dumps(row) + "\n")
    return path


def build_preferences(
    model: Any,
    processor: Any,
    scenes: list[Scene],
    work_dir: Path,
    *,
    samples: int,
    temperature: float,
    seed: int,
    batch_size: int = 32,
) -> tuple[Path, PreferenceStats]:
    """Sample, judge, pair and save. Returns the JSONL path and the statistics."""
    import time

    clock = time.perf_counter()
    prompts = load_prompts(write_prompts(scenes, work_dir)).records
    config = GenerateConfig(n=samples, temperature=temperature, max_new_tokens=32, batch_size=batch_size, seed=seed)
    lines = generate_samples(
        prompts,
        HFSampler(model, processor, config),
        config,
        work_dir / "samples.jsonl",
        model_id="demo sft",
        overwrite=True,
        progress=True,
        desc="sampling captions",
    )
    stats = PreferenceStats(images=len(scenes), samples_per_image=samples)
    stats.seconds["generate"] = round(time.perf_counter() - clock, 1)
    clock = time.perf_counter()
    judge = make_judge("objects", vocabulary=list(OBJECTS), colours=list(COLOURS))
    scored = judge_samples(
        [(line, record_of(line, "demo samples", work_dir)) for line in lines],
        judge,
        work_dir / "scored.jsonl",
        settings={"judge": "objects", "vocabulary": "demo"},
        overwrite=True,
        progress=False,
    )
    stats.seconds["judge"] = round(time.perf_counter() - clock, 1)
    clock = time.perf_counter()
    records, pair_stats = build_pairs(
        [(line, record_of(line, "demo samples", work_dir)) for line in scored], PairConfig("best-worst")
    )
    judged = [
        (s["text"], scene) for line, scene in zip(scored, scenes) for s in line["samples"] if s["score"] is not None
    ]
    stats.caption_pairs, stats.caption_ties = pair_stats.pairs, pair_stats.prompts_without_pairs
    stats.empty_samples = pair_stats.empty_samples
    stats.mean_sample_score = judged_means(scored).get("mean_score", 0.0)
    stats.hallucinating_samples = sum(_hallucinates(text, scene) for text, scene in judged) / max(len(judged), 1)
    stats.chosen_scores, stats.rejected_scores = pair_stats.chosen_scores, pair_stats.rejected_scores
    stats.mean_chosen_score = float(np.mean(stats.chosen_scores)) if stats.chosen_scores else 0.0
    stats.mean_rejected_score = float(np.mean(stats.rejected_scores)) if stats.rejected_scores else 0.0

    rng = np.random.default_rng(seed + 1)
    root = str(work_dir.resolve())
    for scene, prompt in zip(scenes, prompts):
        for name in question_objects(scene, rng):
            right = YES if name in scene.objects else NO
            wrong = NO if right == YES else YES
            truth = [(t.colour, t.name) for t in scene.things]
            records.append(
                PreferenceRecord(
                    f"<image>\n{QUESTION.format(name)}",
                    right,
                    wrong,
                    images=list(prompt.images),
                    image_root=root,
                    score_chosen=yes_no_score(right, name, truth),
                    score_rejected=yes_no_score(wrong, name, truth),
                    id=f"{scene.id}-{name}",
                )
            )
            stats.yes_no_pairs += 1
    # Mixed, so every batch holds both kinds (the trainer reads the file in order only if told to).
    order = np.random.default_rng(seed + 2).permutation(len(records))
    records = [records[i] for i in order]
    path = save_preference_data(records, work_dir / "preferences.jsonl", image_root=work_dir)
    stats.seconds["pairs"] = round(time.perf_counter() - clock, 1)
    return path, stats


def _hallucinates(text: str, scene: Scene) -> bool:
    return any(name not in scene.objects for name in MATCHER.objects_in(text))
