"""On-policy preference data: the SFT model's own captions, ranked by the rule judge.

For every preference image the SFT model samples several captions; the judge scores each against the
ground truth (0-10); the best and the worst become a pair with their scores (a tie - every sample
scored the same - gives no pair and is counted). Yes/no questions about the same images add pairs whose
chosen response is the correct answer. Everything is written in our JSONL format
(`save_preference_data`), with the images as PNG files beside it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mm_unidpo.data import PreferenceRecord, save_preference_data

from .generation import generate
from .judge import caption_score, yes_no_score
from .sft import question_objects
from .world import CAPTION_PROMPT, NO, QUESTION, YES, Scene, save_scene


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

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("chosen_scores")
        out.pop("rejected_scores")
        return out


def _truth(scene: Scene) -> list[tuple[str | None, str]]:
    return [(t.colour, t.name) for t in scene.things]


def build_preferences(model: Any, processor: Any, scenes: list[Scene], work_dir: Path, *, samples: int,
                      temperature: float, seed: int, batch_size: int = 32) -> tuple[Path, PreferenceStats]:
    """Sample, judge, pair and save. Returns the JSONL path and the statistics."""
    image_dir = work_dir / "images" / "preference"
    root = str(work_dir.resolve())
    files = [f"images/preference/{save_scene(s, image_dir)}" for s in scenes]
    captions = generate(model, processor, [CAPTION_PROMPT] * len(scenes), [s.image for s in scenes],
                        max_new_tokens=32, batch_size=batch_size, num_samples=samples, temperature=temperature,
                        seed=seed, desc="sampling captions")
    stats = PreferenceStats(images=len(scenes), samples_per_image=samples)
    records: list[PreferenceRecord] = []
    all_scores, hallucinating = [], 0
    for scene, path, options in zip(scenes, files, captions):
        truth = _truth(scene)
        # An empty sample (end of turn at once) cannot be a response in our data format: dropped, counted.
        stats.empty_samples += sum(not c.strip() for c in options)
        options = [c for c in options if c.strip()]
        if not options:
            stats.caption_ties += 1
            continue
        scores = [caption_score(c, truth) for c in options]
        all_scores += scores
        hallucinating += sum(_hallucinates(c, scene) for c in options)
        best, worst = int(np.argmax(scores)), int(np.argmin(scores))
        if scores[best] == scores[worst] or options[best].strip() == options[worst].strip():
            stats.caption_ties += 1
            continue
        records.append(PreferenceRecord(f"<image>\n{CAPTION_PROMPT}", options[best], options[worst], images=[path],
                                        image_root=root,
                                        score_chosen=scores[best], score_rejected=scores[worst],
                                        id=f"{scene.id}-caption"))
        stats.chosen_scores.append(scores[best])
        stats.rejected_scores.append(scores[worst])
    stats.caption_pairs = len(records)

    rng = np.random.default_rng(seed + 1)
    for scene, path in zip(scenes, files):
        for name in question_objects(scene, rng):
            right = YES if name in scene.objects else NO
            wrong = NO if right == YES else YES
            truth = _truth(scene)
            records.append(PreferenceRecord(f"<image>\n{QUESTION.format(name)}", right, wrong, images=[path],
                                            image_root=root,
                                            score_chosen=yes_no_score(right, name, truth),
                                            score_rejected=yes_no_score(wrong, name, truth),
                                            id=f"{scene.id}-{name}"))
            stats.yes_no_pairs += 1
    # Mixed, so every batch holds both kinds (the trainer reads the file in order only if told to).
    order = np.random.default_rng(seed + 2).permutation(len(records))
    records = [records[i] for i in order]

    stats.mean_sample_score = float(np.mean(all_scores)) if all_scores else 0.0
    stats.mean_chosen_score = float(np.mean(stats.chosen_scores)) if stats.chosen_scores else 0.0
    stats.mean_rejected_score = float(np.mean(stats.rejected_scores)) if stats.rejected_scores else 0.0
    stats.hallucinating_samples = hallucinating / max(len(all_scores), 1)
    path = save_preference_data(records, work_dir / "preferences.jsonl", image_root=work_dir)
    return path, stats


def _hallucinates(text: str, scene: Scene) -> bool:
    from .judge import MATCHER

    return any(name not in scene.objects for name in MATCHER.objects_in(text))
