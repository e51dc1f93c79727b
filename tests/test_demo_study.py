"""`mm-unidpo demo --study`: the variants list, the blank-image reliance measure against the pair path,
the study table and plot, and (slow) a tiny end-to-end run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from PIL import Image

from mm_unidpo.data import PreferenceRecord
from mm_unidpo.demo import main
from mm_unidpo.demo.evaluate import pope_questions
from mm_unidpo.demo.image_reliance import GREY, blank_image_reliance
from mm_unidpo.demo.pipeline import STUDY, VARIANTS
from mm_unidpo.demo.study import write_study
from mm_unidpo.demo.world import NO, QUESTION, YES, WorldConfig, make_scenes
from mm_unidpo.errors import UsageError
from mm_unidpo.models import get_adapter
from mm_unidpo.testing import tiny
from mm_unidpo.train.config import load_config

from .helpers import one_thread  # noqa: F401  (autouse)


def test_every_study_variant_is_a_valid_training_config():
    assert STUDY == (
        "dpo",
        "unidpo",
        "unidpo-no-wqual",
        "unidpo-no-wperf",
        "unidpo-no-cnll",
        "dpo-mdpo",
        "unidpo-mdpo",
        "adadpo",
    )
    from mm_unidpo.demo.pipeline import CONFIG_DIR

    for name in STUDY:
        v = VARIANTS[name]
        config = load_config(
            CONFIG_DIR / f"{v.config}.yaml",
            [*v.overrides, "--model.name_or_path=x", "--data.train=x", "--train.output_dir=x"],
        )
        params = config.loss.params
        assert config.loss.name == v.config
        assert (params.get("image_term") == "mdpo") == name.endswith("mdpo")
        assert (config.data.corruption == "crop") == name.endswith("mdpo")
    assert VARIANTS["unidpo-no-wperf"].overrides == ("--loss.params.gamma=0",)


def test_blank_image_reliance_matches_the_pair_path():
    model, processor = tiny("llava")
    scenes = make_scenes(3, 5, WorldConfig(), "t")
    questions = pope_questions(scenes, scenes, 0)
    got = blank_image_reliance(model, processor, scenes, questions, batch_size=2)
    asked = [q for q in questions["random"] if q.label == "yes"]
    # Independently: each question as a pair (chosen "No.", rejected "Yes.") through collate and the layout.
    adapter = get_adapter(model, processor)
    records = [
        PreferenceRecord(
            f"<image>\n{QUESTION.format(q.object)}",
            NO,
            YES,
            images=[Image.new("RGB", scenes[q.scene].image.size, GREY)],
            id=str(i),
            index=i,
        )
        for i, q in enumerate(asked)
    ]
    with torch.no_grad():
        out = adapter.sequence_logps(model, adapter.collate(records))
    expected = float((out.chosen_logps > out.rejected_logps).float().mean())
    assert got == {"blank_no_rate": pytest.approx(expected), "n": len(asked)} and len(asked) > 0


def test_study_table_and_plot(tmp_path):
    def seed(s, acc, no_rate):
        method = {
            "pope": {"accuracy": acc, "f1": acc},
            "chair": {"chair_s": 0.5, "chair_i": None},
            "image_reliance": {"blank_no_rate": no_rate, "n": 10},
        }
        return {"seed": s, "methods": {"sft": method, "dpo-mdpo": {**method, "image_reliance": {"blank_no_rate": 1.0}}}}

    path = write_study(tmp_path, [seed(0, 0.5, 0.2), seed(1, 0.7, 0.4)], 90.0, "mm-unidpo demo --study")
    text = path.read_text()
    assert "| SFT | 0.600 ± 0.100 | 0.600 ± 0.100 | 0.500 ± 0.000 | n/a | 0.300 ± 0.100 |" in text
    assert "| DPO + mDPO |" in text and "1.000 ± 0.000 |" in text
    assert (tmp_path / "study.png").stat().st_size > 1000
    assert json.loads((tmp_path / "study.json").read_text())["values"]["sft"]["POPE acc"] == [0.5, 0.7]


def test_study_arguments_are_checked():
    with pytest.raises(UsageError, match="unknown method"):
        main(["--tiny", "--methods", "dpo,nope"])
    with pytest.raises(UsageError, match="--study is the VLM task's"):
        main(["--study", "--task", "math"])


@pytest.mark.slow
def test_tiny_study_end_to_end(tmp_path):
    out = tmp_path / "study"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mm_unidpo.cli",
            "demo",
            "--tiny",
            "--study",
            "--seeds",
            "1",
            "--methods",
            "dpo-mdpo",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    values = json.loads((out / "study.json").read_text())["values"]
    assert set(values) == {"sft", "dpo-mdpo"} and values["sft"]["blank-image “no”"]
    logged = json.loads((out / "dpo-mdpo" / "trainer_state.json").read_text())["log_history"]
    assert any("loss/image_conditional" in e for e in logged)
    assert (out / "study.png").is_file() and "| DPO + mDPO |" in (out / "study.md").read_text()
