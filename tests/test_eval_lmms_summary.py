"""Run summaries (markdown + PNG) and the task hooks of eval/utils.py, without a model."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from PIL import Image

from mm_unidpo.evaluation.lmms.summary import find_results_file, load_run, summarize_runs

REPO = Path(__file__).resolve().parents[1]
EVAL_DIR = REPO / "eval"


def _results(pope_acc: float, yes_ratio: float, chair_s: float, cog: float, n: int = 500) -> dict:
    def metrics(**values):
        out = {"alias": "x"}
        for k, v in values.items():
            out[f"{k},none"] = v
            out[f"{k}_stderr,none"] = "N/A"
        return out

    return {
        "results": {
            "mm_pope": metrics(pope_accuracy=pope_acc, pope_f1=pope_acc - 0.01, pope_yes_ratio=yes_ratio,
                               pope_ambiguous_ratio=0.0),
            "mm_chair": metrics(chair_s=chair_s, chair_i=chair_s / 4, chair_recall=0.6),
            "mm_amber_g": metrics(amber_chair=0.08, amber_cover=0.5, amber_hal=0.3, amber_cog=cog),
        },
        "higher_is_better": {
            "mm_pope": {"pope_accuracy": True, "pope_f1": True, "pope_yes_ratio": True, "pope_ambiguous_ratio": False},
            "mm_chair": {"chair_s": False, "chair_i": False, "chair_recall": True},
            "mm_amber_g": {"amber_chair": False, "amber_cover": True, "amber_hal": False, "amber_cog": False},
        },
        "n-samples": {"mm_pope": {"original": n, "effective": n}, "mm_chair": {"original": 50, "effective": 50},
                      "mm_amber_g": {"original": 50, "effective": 50}},
        "config": {"model": "mm_unidpo", "model_args": "pretrained=m"},
    }


@pytest.fixture
def runs(tmp_path):
    paths = []
    for name, values in (("base", (0.80, 0.62, 0.50, 0.05)), ("unidpo", (0.86, 0.51, 0.30, 0.02))):
        out = tmp_path / name / "model_dir"
        out.mkdir(parents=True)
        (out / "20250101_000000_results.json").write_text(json.dumps({**_results(0.1, 0.1, 0.1, 0.1)}))
        (out / "20250102_000000_results.json").write_text(json.dumps(_results(*values)))  # newest wins
        paths.append(tmp_path / name)
    return paths


def test_load_run_reads_metrics_directions_and_sizes(runs):
    run = load_run(runs[1])
    assert run.name == "unidpo" and run.path.endswith("20250102_000000_results.json")
    assert run.metrics[("mm_pope", "pope_accuracy")] == 0.86 and ("mm_pope", "pope_accuracy_stderr") not in run.metrics
    assert run.higher_is_better[("mm_amber_g", "amber_cog")] is False
    assert run.higher_is_better[("mm_pope", "pope_yes_ratio")] is None  # no better direction
    assert run.samples["mm_pope"] == 500
    assert find_results_file(Path(run.path)) == Path(run.path)
    with pytest.raises(FileNotFoundError):
        find_results_file(runs[0] / "nothing")


def test_summarize_runs_markdown_and_png(runs, tmp_path):
    png = tmp_path / "compare.png"
    text = summarize_runs(runs, png=png, title="Hallucination benchmarks")
    lines = text.splitlines()
    assert "| task | metric | base | unidpo |" in lines
    assert "| mm_pope (n=500) | pope_accuracy ↑ | 0.800 | **0.860** |" in lines
    assert "| mm_chair (n=50) | chair_s ↓ | 0.500 | **0.300** |" in lines  # lower is better
    assert "| mm_amber_g (n=50) | amber_cog ↓ | 0.050 | **0.020** |" in lines
    assert "| mm_pope (n=500) | pope_yes_ratio · | 0.620 | 0.510 |" in lines  # no winner for the yes-ratio
    assert "| mm_chair (n=50) | chair_recall ↑ | 0.600 | 0.600 |" in lines  # a tie: nothing bold
    assert "![comparison](compare.png)" in text
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] > 600 and im.size[1] > 300
    named = summarize_runs(runs, names=["A", "A"])
    assert "| task | metric | A | A (2) |" in named
    with pytest.raises(ValueError):
        summarize_runs(runs, names=["only one"])


def _hooks():
    spec = importlib.util.spec_from_file_location("eval_task_utils", EVAL_DIR / "utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _lines(name: str) -> list[dict]:
    return [json.loads(line) for line in (EVAL_DIR / "data" / name).read_text().splitlines()]


def test_sample_data_and_task_hooks():
    """The shipped sample tasks: their images exist, and perfect / wrong answers score as they should."""
    u = _hooks()
    pope = _lines("pope_sample.jsonl")
    assert len(pope) == 8 and sorted(d["label"] for d in pope) == ["no"] * 4 + ["yes"] * 4
    for doc in pope:
        (image,) = u.doc_to_visual(doc)
        assert image.mode == "RGB" and image.size == (96, 96)
    assert u.pope_doc_to_text(pope[0], {"pre_prompt": "", "post_prompt": "\nAnswer."}) == \
        "Is there a circle in the image?\nAnswer."
    perfect = [u.pope_process_results(d, ["Yes, there is." if d["label"] == "yes" else "No."])["pope_f1"]
               for d in pope]
    assert u.pope_accuracy(perfect) == 1 and u.pope_f1(perfect) == 1 and u.pope_yes_ratio(perfect) == 0.5
    always_yes = [u.pope_process_results(d, ["Yes"])["pope_accuracy"] for d in pope]
    assert u.pope_accuracy(always_yes) == 0.5 and u.pope_yes_ratio(always_yes) == 1 and u.pope_recall(always_yes) == 1

    # The hooks read each answer about its question's object: one clause about another shape does not flip it.
    about = [u.pope_process_results(d, [f"There is a {d['text'].split()[3]}, but no kite." if d["label"] == "yes"
                                        else f"There is a kite, but no {d['text'].split()[3]}."])["pope_accuracy"]
             for d in pope]
    assert all(i["question"] == d["text"] for i, d in zip(about, pope))
    assert u.pope_accuracy(about) == 1 and u.pope_ambiguous_ratio(about) == 0

    chair = _lines("chair_sample.jsonl")
    exact = [u.chair_sample_process_results(d, ["I see " + " and a ".join(d["objects"]) + "."])["chair_s"]
             for d in chair]
    assert (u.chair_s(exact), u.chair_i(exact), u.chair_recall(exact)) == (0, 0, 1)
    invented = [u.chair_sample_process_results(d, ["Two red discs and a star."])["chair_i"] for d in chair]
    # circle in 2 of 4 images, star in 1: captions 1 (star), 2 (circle + star), 3 (-), 4 (circle + star) hallucinate
    assert u.chair_s(invented) == 3 / 4 and u.chair_i(invented) == 5 / 8

    # A document may name its own object table; the general hook then uses it instead of COCO's.
    own = [u.chair_process_results({**d, "synonyms": str(EVAL_DIR / "data" / "shape_synonyms.txt")},
                                   ["Two red discs and a star."])["chair_i"] for d in chair]
    assert u.chair_i(own) == 5 / 8
    coco = [u.chair_process_results(d, ["Two red discs and a star."])["chair_i"] for d in chair]
    assert coco[0]["table"] is None and u.chair_s(coco) == 0  # no COCO object is named

    amber = _lines("amber_g_sample.jsonl")
    prone = [u.amber_sample_process_results(d, ["A " + d["hallu"][0] + "."])["amber_cog"] for d in amber]
    assert (u.amber_chair(prone), u.amber_hal(prone), u.amber_cog(prone), u.amber_cover(prone)) == (1, 1, 1, 0)
    assert not hasattr(u.amber_cog, "__name__")  # a partial: lmms-eval does not bootstrap it


def test_doc_to_visual_image_roots(tmp_path, monkeypatch):
    u = _hooks()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "red.png")
    assert u.doc_to_visual({"image": "red.png", "image_root": str(tmp_path)})[0].getpixel((0, 0)) == (255, 0, 0)
    assert u.doc_to_visual({"image": str(tmp_path / "red.png")})[0].size == (8, 8)
    monkeypatch.setenv("MM_UNIDPO_IMAGE_ROOT", str(tmp_path))
    assert len(u.doc_to_visual({"images": ["red.png", "red.png"]})) == 2
    raw = (tmp_path / "red.png").read_bytes()
    assert u.doc_to_visual({"image": {"bytes": raw, "path": None}})[0].size == (8, 8)
    with pytest.raises(FileNotFoundError, match="MM_UNIDPO_IMAGE_ROOT"):
        u.doc_to_visual({"image": "missing.png"})


def test_mmhal_answers_export(tmp_path):
    u = _hooks()
    template = [{"question": "What is it?", "gt_answer": "A cat.", "image_src": "u0"},
                {"question": "Colour?", "gt_answer": "Red.", "image_src": "u1"}]
    (tmp_path / "template.json").write_text(json.dumps(template))
    docs = [{"id": k, **entry} for k, entry in enumerate(template)]
    items = [u.mmhal_process_results(d, [answer]) for d, answer in zip(docs, ["A dog.", " "])]
    assert u.mmhal_doc_to_text(docs[0]) == "What is it?"
    assert u.mmhal_answered([i["mmhal_answered"] for i in items]) == 0.5
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps({"doc_id": k, **i}) + "\n" for k, i in reversed(list(enumerate(items)))))
    spec = importlib.util.spec_from_file_location("mmhal_export", EVAL_DIR / "mmhal_export.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.export(str(samples), str(tmp_path / "template.json"), str(tmp_path / "out.json")) == 2
    out = json.loads((tmp_path / "out.json").read_text())
    assert [e["model_answer"] for e in out] == ["A dog.", " "] and out[0]["gt_answer"] == "A cat."


def test_chair_table_from_the_environment_gets_the_chair_rules(tmp_path, monkeypatch):
    """$MM_UNIDPO_CHAIR_SYNONYMS (e.g. the original synonyms.txt) is matched with the CHAIR rules; a dataset's
    own table (the document's `synonyms`) as it is."""
    table = tmp_path / "synonyms.txt"
    table.write_text("person, baby\nelephant\n")
    u = _hooks()
    doc = {"image_id": 1, "objects": ["elephant"]}
    monkeypatch.setenv("MM_UNIDPO_CHAIR_SYNONYMS", str(table))
    items = [u.chair_process_results(doc, ["A baby elephant."])["chair_s"]]
    assert u.chair_s(items) == 0  # "baby elephant": an elephant, no person
    monkeypatch.delenv("MM_UNIDPO_CHAIR_SYNONYMS")
    own = [u.chair_process_results({**doc, "synonyms": str(table)}, ["A baby elephant."])["chair_s"]]
    assert u.chair_s(own) == 1  # the dataset's table, no rules: "baby" is a person
