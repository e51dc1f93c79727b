"""Held-out evaluation through lmms-eval and our plugin: POPE (random / popular / adversarial) and CHAIR.

The held-out scenes are written as lmms-eval tasks on local files (:func:`write_tasks`: PNG images,
JSON-lines documents, task YAMLs that include the repository's ``eval/_pope.yaml`` and ``eval/_chair.yaml``),
and each model is evaluated by ``lmms_eval.evaluator.simple_evaluate`` with our model class
(:class:`mm_unidpo.evaluation.lmms.MMUniDPO`) wrapping the model in memory: the path a user takes with
``lmms-eval --model mm_unidpo``, with the same scoring (:mod:`mm_unidpo.evaluation.hallucination`).
lmms-eval's results JSON for each model is kept next to the report.

POPE questions follow the paper's construction on the demo's held-out scenes: per image up to two
present objects (label yes) and as many absent ones (label no), the absent ones drawn uniformly
(random), from the most frequent objects of the training scenes (popular), or from the objects that
co-occur most with the ones present (adversarial). Held-out scenes are never used to tune anything.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mm_unidpo.evaluation.hallucination import chair_scores
from mm_unidpo.evaluation.lmms.cli import tasks_dir

from .judge import MATCHER, caption_score
from .world import CAPTION_PROMPT, OBJECTS, PARTNER, QUESTION, Scene, cooccurrence, frequency

SPLITS = ("random", "popular", "adversarial")
POPE_KEYS = ("accuracy", "precision", "recall", "f1", "yes_ratio")
CHAIR_KEYS = ("chair_s", "chair_i", "recall")
POPE_TASKS = {split: f"demo_pope_{split}" for split in SPLITS}
CHAIR_TASK = "demo_chair"
POPE_MAX_NEW_TOKENS, CAPTION_MAX_NEW_TOKENS = 4, 32


@dataclass(frozen=True)
class Question:
    scene: int  # index into the held-out scenes
    object: str
    label: str  # "yes" | "no"


def pope_questions(scenes: list[Scene], train_scenes: list[Scene], seed: int) -> dict[str, list[Question]]:
    """Balanced POPE questions per split; statistics (frequency, co-occurrence) from `train_scenes`."""
    rng = np.random.default_rng(seed)
    freq = frequency(train_scenes)
    cooc = cooccurrence(train_scenes)
    out: dict[str, list[Question]] = {split: [] for split in SPLITS}
    for k, scene in enumerate(scenes):
        present = scene.objects
        absent = [o for o in OBJECTS if o not in present]
        n = min(2, len(present), len(absent))
        positives = [str(o) for o in rng.choice(present, size=n, replace=False)]
        by_freq = sorted(absent, key=lambda o: (-freq[o], o))
        by_cooc = sorted(absent, key=lambda o: (-sum(cooc[p][o] for p in present), o))
        negatives = {
            "random": [str(o) for o in rng.choice(absent, size=n, replace=False)],
            "popular": by_freq[:n],
            "adversarial": by_cooc[:n],
        }
        for split in SPLITS:
            out[split] += [Question(k, o, "yes") for o in positives]
            out[split] += [Question(k, o, "no") for o in negatives[split]]
    return out


def write_tasks(folder: Path, scenes: list[Scene], questions: dict[str, list[Question]]) -> Path:
    """The held-out scenes as lmms-eval tasks in `folder` (pass it as an include path): one POPE task per
    split and a CHAIR task whose documents name the demo's object table."""
    ours = tasks_dir().resolve()
    if not (ours / "_pope.yaml").is_file():
        raise FileNotFoundError(
            f"the demo evaluates with the task configs in the repository's eval/ folder, not "
            f"found at {ours}: run it from a clone (or set MM_UNIDPO_EVAL_TASKS)"
        )
    folder = folder.resolve()
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for scene in scenes:
        scene.image.save(folder / "images" / f"{scene.id}.png")
    (folder / "objects.txt").write_text("".join(f"{o}\n" for o in OBJECTS), encoding="utf-8")

    def write(name: str, docs: list[dict[str, Any]], base: str, generation: dict[str, Any]) -> None:
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
        until = "  until: []\n" if "until" in generation else ""
        (folder / f"{name}.yaml").write_text(
            f"include: {ours / base}\ntask: {name}\ndataset_kwargs:\n  data_files:\n    test: {folder / name}.jsonl\n"
            f"  cache_dir: {folder / 'datasets_cache'}\ngeneration_kwargs:\n"
            f"  max_new_tokens: {generation['max_new_tokens']}\n  temperature: 0\n  do_sample: false\n{until}"
            'lmms_eval_specific_kwargs:\n  default:\n    pre_prompt: ""\n    post_prompt: ""\n',
            encoding="utf-8",
        )

    common = {"image_root": str(folder)}
    for split in SPLITS:
        docs = [
            {
                "question_id": i,
                "image": f"images/{scenes[q.scene].id}.png",
                "text": QUESTION.format(q.object),
                "label": q.label,
                "scene": q.scene,
                **common,
            }
            for i, q in enumerate(questions[split])
        ]
        write(POPE_TASKS[split], docs, "_pope.yaml", {"max_new_tokens": POPE_MAX_NEW_TOKENS})
    docs = [
        {
            "image_id": k,
            "image": f"images/{s.id}.png",
            "objects": list(s.objects),
            "prompt": CAPTION_PROMPT,
            "synonyms": str(folder / "objects.txt"),
            **common,
        }
        for k, s in enumerate(scenes)
    ]
    write(CHAIR_TASK, docs, "_chair.yaml", {"max_new_tokens": CAPTION_MAX_NEW_TOKENS, "until": []})
    return folder


def evaluate_model(
    model: Any,
    processor: Any,
    scenes: list[Scene],
    tasks: Path,
    *,
    batch_size: int = 64,
    name: str = "model",
    results_path: Path | None = None,
) -> dict[str, Any]:
    """POPE per split and averaged over the splits, CHAIR on greedy captions, and the captions, from one
    lmms-eval run of the tasks in `tasks` (see :func:`write_tasks`) with our model class around `model`."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # local files only: no hub round trips
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    from mm_unidpo.evaluation.lmms.model import MMUniDPO  # lazy: imports lmms-eval (optional, slow)

    lm = MMUniDPO(model=model, processor=processor, device="cpu", batch_size=batch_size)
    print(f"{name}: lmms-eval, model mm_unidpo, tasks {', '.join([*POPE_TASKS.values(), CHAIR_TASK])}", flush=True)
    out = simple_evaluate(
        model=lm,
        tasks=[*POPE_TASKS.values(), CHAIR_TASK],
        bootstrap_iters=0,
        log_samples=True,
        task_manager=TaskManager("WARNING", include_path=[str(tasks)], include_defaults=False),
        verbosity="WARNING",
    )
    if out is None:
        raise RuntimeError(f"lmms-eval returned no results for {name}")
    samples = out.pop("samples")
    if results_path is not None:
        results_path.parent.mkdir(parents=True, exist_ok=True)
        results_path.write_text(json.dumps(out, indent=2, default=str), encoding="utf-8")
    metrics = out["results"]
    splits = {}
    for split, task in POPE_TASKS.items():
        splits[split] = {k: _finite(metrics[task][f"pope_{k},none"]) for k in (*POPE_KEYS, "ambiguous_ratio")}
        splits[split]["n"] = len(samples[task])
    pope = {k: _mean([splits[s][k] for s in SPLITS]) for k in (*POPE_KEYS, "ambiguous_ratio")}

    logged = sorted(samples[CHAIR_TASK], key=lambda s: s["doc_id"])
    captions = [_response(s["filtered_resps"]).strip() for s in logged]
    # Counts and diagnostics from the captions lmms-eval logged (the rates come from its results).
    chair = chair_scores(captions, [s.objects for s in scenes], MATCHER)
    # How many hallucinated objects are the companion of an object that is there: the text prior at work.
    hallucinated = [(o, s) for c, s in zip(chair.per_caption, scenes) for o in c["hallucinated"]]
    companions = sum(PARTNER[o] in s.objects for o, s in hallucinated)
    judge = [caption_score(c, [(t.colour, t.name) for t in s.things]) for c, s in zip(captions, scenes)]
    return {
        "pope": pope,
        "pope_splits": splits,
        "chair": {
            "chair_s": _finite(metrics[CHAIR_TASK]["chair_s,none"]),
            "chair_i": _finite(metrics[CHAIR_TASK]["chair_i,none"]),
            "recall": _finite(metrics[CHAIR_TASK]["chair_recall,none"]),
            "n": chair.n,
            "mentioned": chair.mentioned,
            "hallucinated": chair.hallucinated,
            "companion_share": companions / len(hallucinated) if hallucinated else None,
        },
        "judge_caption_score": float(np.mean(judge)) if judge else 0.0,
        "captions": captions,
    }


def _response(logged: Any) -> str:
    """A logged sample's (filtered) response: lmms-eval logs it as a string or a one-element list."""
    while isinstance(logged, (list, tuple)):
        logged = logged[0] if logged else ""
    return str(logged)


def _finite(value: float | None) -> float | None:
    """NaN (an undefined ratio, e.g. precision with no "yes" at all) becomes None: JSON null."""
    return None if value is None or math.isnan(value) else float(value)


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known else None
