"""An output folder is never silently reused (issue 25, item 2): a second run into a folder holding an
earlier run is refused before any work, replaced with --overwrite, continued with resume; a resume names
its checkpoint and refuses one written with other settings."""

from __future__ import annotations

import json
import logging

import pytest

from mm_unidpo.testing import tiny
from mm_unidpo.train.config import config_from_dict
from mm_unidpo.train.run import main as train_main
from mm_unidpo.train.run import train
from mm_unidpo.yaml_config import ConfigError


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("outdir")
    model, processor = tiny("causal_lm")
    model.save_pretrained(root / "lm")
    processor.save_pretrained(root / "lm")
    with open(root / "data.jsonl", "w") as f:
        for i in range(4):
            f.write(
                json.dumps(
                    {"id": f"r{i}", "prompt": f"Question {i}?", "chosen": f"Answer {i} is good.", "rejected": "No."}
                )
                + "\n"
            )
    return root


def _raw(root, out, **train):
    return {
        "model": {"name_or_path": str(root / "lm"), "dtype": "float32"},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "data": {"train": str(root / "data.jsonl")},
        "loss": {"name": "dpo"},
        "train": {
            "output_dir": str(out),
            "max_steps": 2,
            "per_device_train_batch_size": 2,
            "save_steps": 1,
            "logging_steps": 1,
            "use_cpu": True,
            "disable_tqdm": True,
            **train,
        },
    }


def test_reuse_refused_overwrite_replaces_resume_continues(setup, tmp_path, caplog):
    out = tmp_path / "run"
    assert train(config_from_dict(_raw(setup, out)).validate())["global_step"] == 2
    with pytest.raises(ConfigError, match=r"holds an earlier run \(checkpoint-1, checkpoint-2.*--overwrite"):
        train(config_from_dict(_raw(setup, out, max_steps=3)).validate())
    # resume picks the newest checkpoint, says so, and trains only the remaining step
    with caplog.at_level(logging.INFO, logger="mm_unidpo.train.output_dir"):
        summary = train(config_from_dict(_raw(setup, out, max_steps=3, resume_from_checkpoint=True)).validate())
    assert summary["global_step"] == 3 and "resuming from" in caplog.text and "checkpoint-2" in caplog.text
    # a resume from a run with other settings is refused, naming them
    other = _raw(setup, out, max_steps=4, resume_from_checkpoint=True)
    other["loss"] = {"name": "ipo"}
    with pytest.raises(ConfigError, match=r"written with other settings \(loss\.name"):
        train(config_from_dict(other).validate())
    # --overwrite starts afresh: the old checkpoints are gone, the new run trains all its steps
    (setup / "cfg.yaml").write_text(json.dumps(_raw(setup, out, max_steps=1)))
    assert train_main([str(setup / "cfg.yaml"), "--overwrite"]) == 0
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 1 and not (out / "checkpoint-3").exists()


@pytest.mark.slow  # three tiny training runs, ~19 s on a shared 2-core machine
def test_report_covers_the_whole_run_across_a_resume(setup, tmp_path):
    """A run resumed from checkpoint-1 reports step 1's per-pair weights and loss too, as the uninterrupted
    run does (the Trainer's own training_loss counts only the resumed session)."""
    import shutil

    data = tmp_path / "scored.jsonl"
    data.write_text(
        "".join(
            json.dumps(
                {
                    "id": f"r{i}",
                    "prompt": f"Question {i}?",
                    "chosen": f"Answer {i} is good.",
                    "rejected": "No.",
                    "score_chosen": 8.0 + i,
                    "score_rejected": 2.0,
                }
            )
            + "\n"
            for i in range(4)
        )
    )

    def run(out, **train_options):
        raw = _raw(setup, out, **train_options)
        raw["data"]["train"], raw["loss"] = str(data), {"name": "unidpo"}
        return train(config_from_dict(raw).validate())

    whole, cut = tmp_path / "whole", tmp_path / "cut"
    run(whole)
    run(cut)
    for name in ("checkpoint-2", "final", "trainer_state.json", "report.md", "pair_weights.json"):
        path = cut / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    resumed = run(cut, resume_from_checkpoint=True)
    assert resumed["global_step"] == 2
    a, b = (json.loads((d / "pair_weights.json").read_text()) for d in (whole, cut))
    assert a["steps"] == b["steps"] and sorted(set(a["steps"]["weights/quality"])) == [0, 1]
    assert a["values"].keys() == b["values"].keys()
    assert all(a["values"][k] == pytest.approx(b["values"][k], abs=1e-5) for k in a["values"])
    line = next(t for t in (whole / "report.md").read_text().splitlines() if "mean train loss" in t)
    assert "logged steps 1-2" in line and line == next(
        t for t in (cut / "report.md").read_text().splitlines() if "mean train loss" in t
    )
