"""`mm-unidpo iterate`: two rounds on a tiny LLaVA end to end (each round samples from the previous
round's merged model, which is also its reference), the side-by-side report, a rerun that redoes nothing,
and config errors caught before round 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from mm_unidpo.cli import main as cli
from mm_unidpo.onpolicy.iterate import iterate, load_iterate_config, main
from mm_unidpo.onpolicy.store import settings_path
from mm_unidpo.testing import tiny

from .helpers import IMAGES, need_images

pytestmark = pytest.mark.usefixtures("single_thread")


def distinct_characters(record, response: str) -> float:
    """A rule scorer that spreads random tiny-model samples over 0-6 (any spread gives pairs)."""
    return float(len(set(response)) % 7)


def _config(tmp_path: Path, **changes) -> Path:
    need_images("horse.png", "coffee.png")
    model, processor = tiny("llava")
    model.save_pretrained(tmp_path / "start")
    processor.save_pretrained(tmp_path / "start")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(
            json.dumps({"id": f"q{k}", "prompt": "Describe the image.", "images": [name]}) + "\n"
            for k, name in enumerate(["horse.png", "coffee.png", "horse.png"])
        )
    )
    config = {
        "model": str(tmp_path / "start"),
        "prompts": str(prompts),
        "image_root": str(IMAGES),
        "output_dir": str(tmp_path / "run"),
        "rounds": 2,
        "dtype": "float32",
        "generate": {"n": 4, "temperature": 1.0, "max_new_tokens": 6, "batch_size": 2},
        "judge": {"kind": "tests.test_onpolicy_iterate:distinct_characters"},
        "pairs": {"strategy": "best-worst"},
        "train": {
            "model": {"dtype": "float32"},
            "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
            "loss": {"name": "unidpo", "params": {"tau_good": 3.0}},
            "train": {
                "max_steps": 1,
                "per_device_train_batch_size": 2,
                "save_strategy": "no",
                "logging_steps": 1,
                "disable_tqdm": True,
                "use_cpu": True,
            },
        },
        "evaluate": {"prompts": str(prompts), "max_new_tokens": 6},
        **changes,
    }
    path = tmp_path / "iterate.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _rewrite(path: Path, **changes) -> Path:
    """The config of `_config` with other sections (without saving the model again)."""
    path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), **changes}))
    return path


@pytest.mark.slow
def test_two_rounds_end_to_end(tmp_path, monkeypatch):
    result = iterate(load_iterate_config(_config(tmp_path)))
    run = tmp_path / "run"
    rows = result["rounds"]
    assert [row["round"] for row in rows] == [0, 1, 2]
    assert rows[0]["next_policy"] == str(tmp_path / "start") and "eval_mean_score" in rows[0]
    for r in (1, 2):
        row, folder = rows[r], run / f"round-{r}"
        assert row["pairs"] > 0 and row["train_steps"] == 1 and "eval_mean_score" in row and "sample_mean_score" in row
        assert row["next_policy"] == str(folder / "merged") and (folder / "merged" / "config.json").is_file()
        pairs = [json.loads(line) for line in (folder / "pairs.jsonl").read_text().splitlines()]
        assert len(pairs) == row["pairs"] and all(p["score_chosen"] > p["score_rejected"] for p in pairs)
        trained = yaml.safe_load((folder / "train" / "final" / "mm_unidpo_config.yaml").read_text())
        assert trained["model"]["name_or_path"] == rows[r - 1]["next_policy"]  # trained from (and against) the start
        assert trained["data"]["train"] == str(folder / "pairs.jsonl") and trained["data"]["image_root"] == str(
            IMAGES.resolve()
        )
    # Round 2 sampled from round 1's model.
    assert json.loads(settings_path(run / "round-2" / "samples.jsonl").read_text())["model"] == str(
        run / "round-1" / "merged"
    )
    assert json.loads(settings_path(run / "round-2" / "samples.jsonl").read_text())["seed"] == 2000
    report = (run / "report.md").read_text()
    assert "| metric | round 0 | round 1 | round 2 |" in report and "| pairs |  | " in report
    assert json.loads((run / "report.json").read_text()) == rows

    import mm_unidpo.onpolicy.iterate as iterate_module

    monkeypatch.setattr(iterate_module, "train", lambda config: pytest.fail("a finished round was trained again"))
    assert main([str(tmp_path / "iterate.yaml")]) == 0  # a rerun redoes nothing
    assert json.loads((run / "report.json").read_text()) == rows


def test_config_errors_before_round_one(tmp_path, capsys):
    path = _config(tmp_path, colour="blue")
    assert cli(["iterate", str(path)]) == 1 and "unknown key(s) ['colour']" in capsys.readouterr().err
    path = _config(tmp_path, pairs={"strategy": "median"})
    assert cli(["iterate", str(path)]) == 1 and "unknown pairing strategy 'median'" in capsys.readouterr().err
    path = _config(tmp_path, train={"loss": {"name": "unidpo", "params": {"etaa": 1.0}}})
    assert cli(["iterate", str(path)]) == 1 and "not parameters of 'unidpo'" in capsys.readouterr().err
    path = _config(tmp_path, generate={"n": 2, "temperature": 0.0})
    assert cli(["iterate", str(path)]) == 1 and "n > 1 needs sampling" in capsys.readouterr().err
    # Found only after a round of work before: the second round's prompts, evaluate fields, bf16 on a CPU.
    good, path = str(tmp_path / "prompts.jsonl"), _config(tmp_path)
    fine = path.read_text()
    for change, message in [
        ({"prompts": [good, str(tmp_path / "round2.jsonl")]}, "round2.jsonl"),
        ({"evaluate": {"prompts": good, "math": {"templat": "cot"}}}, "evaluate.math"),
        ({"evaluate": {"prompts": good, "n": 3}}, "n > 1 needs sampling"),
        ({"judge": {"kind": "nonesuch"}}, "unknown judge 'nonesuch'; known: rule"),
        *(
            [({"train": {"model": {"dtype": "bfloat16"}}}, "section train: Your setup doesn't support bf16")]
            if not torch.cuda.is_available()
            else []
        ),
    ]:
        path.write_text(fine)
        assert cli(["iterate", str(_rewrite(path, **change))]) == 1
        err = capsys.readouterr().err
        assert message in err and ("templat" in err or "math" not in str(change)), err
    assert not (tmp_path / "run").exists()


def test_pairs_train_whatever_format_the_base_pins(tmp_path):
    """README: a train section on the shipped LLaVA config (data.format: rlaif_v) trains iterate's pairs."""
    shipped = Path(__file__).resolve().parents[1] / "configs" / "llava15_7b_qlora_unidpo_rlaifv.yaml"
    path = _config(tmp_path)
    train = yaml.safe_load(path.read_text())["train"]
    train["base"] = str(shipped)
    train["model"].update(load_in_4bit=False)
    config = load_iterate_config(_rewrite(path, train=train))
    assert config.train["data"]["format"] == "rlaif_v"  # what the base pins ...
    assert config.train_config("m", "p.jsonl", "out", 1).data.format == "unidpo"  # ... and what the pairs are
