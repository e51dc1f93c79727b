"""`mm-unidpo merge` (LoRA folded into the base, reloadable by plain transformers) and `mm-unidpo score`
(rule-based and reward-model scorers filling missing quality scores)."""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch
import yaml
from PIL import Image

from mm_unidpo.data import PreferenceRecord, load_preference_data, save_preference_data
from mm_unidpo.testing import tiny
from mm_unidpo.cli import main as cli
from mm_unidpo.onpolicy.judges import scorers as score
from mm_unidpo.train import merge


# ---------------------------------------------------------------------------------------------- merge

def _llava_inputs(processor):
    image = Image.new("RGB", (40, 40), (200, 30, 30))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is shown?"}]},
                {"role": "assistant", "content": "A red square."}]
    text = processor.apply_chat_template(messages, tokenize=False)
    return processor(images=[image], text=[text], return_tensors="pt")


@pytest.fixture(scope="module")
def llava_adapter(tmp_path_factory):
    """A tiny LLaVA base on disk and a LoRA adapter with random non-zero weights, trained-in-4-bit run config."""
    from peft import get_peft_model

    from mm_unidpo.models.loading import load_pretrained
    from mm_unidpo.train.config import CONFIG_NAME, LoraSettings
    from mm_unidpo.train.setup import lora_config

    root = tmp_path_factory.mktemp("merge")
    model, processor = tiny("llava", seed=0)
    model.save_pretrained(root / "base")
    processor.save_pretrained(root / "base")
    base, _ = load_pretrained(str(root / "base"), dtype="float32")
    peft_model = get_peft_model(base, lora_config(base, LoraSettings(r=4, alpha=8, dropout=0.0)))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.normal_(0.0, 0.2)  # peft starts B at zero: make the update visible
    peft_model.save_pretrained(root / "final")
    with open(root / "final" / CONFIG_NAME, "w") as f:
        yaml.safe_dump({"model": {"family": "llava", "dtype": "float32", "load_in_4bit": True}}, f)
    peft_model.eval()
    with torch.no_grad():
        expected = peft_model(**_llava_inputs(processor)).logits
        with peft_model.disable_adapter():
            base_logits = peft_model(**_llava_inputs(processor)).logits
    return root, processor, expected, base_logits


def test_merge_matches_base_plus_adapter(llava_adapter, caplog):
    from safetensors import safe_open
    from transformers import AutoModelForImageTextToText, AutoProcessor

    root, processor, expected, base_logits = llava_adapter
    assert not torch.allclose(expected, base_logits, atol=1e-3)  # the adapter does change the outputs
    with caplog.at_level(logging.WARNING, logger="mm_unidpo.train.merge"):
        assert merge.main([str(root / "final"), "--out", str(root / "merged")]) == 0
    assert "4-bit" in caplog.text and "dequantised" in caplog.text  # QLoRA notice from the run config
    out = root / "merged"
    assert (out / "model.safetensors").is_file() and (out / "preprocessor_config.json").is_file()
    with safe_open(out / "model.safetensors", "pt") as f:
        assert not any("lora_" in key for key in f.keys())
    merged = AutoModelForImageTextToText.from_pretrained(out).eval()
    reloaded = AutoProcessor.from_pretrained(out)
    with torch.no_grad():
        logits = merged(**_llava_inputs(reloaded)).logits
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)
    assert json.loads((out / "mm_unidpo_merge.json").read_text())["trained_in_4bit"] is True


def test_merge_refuses_4bit_and_non_adapters(llava_adapter, tmp_path, capsys):
    root = llava_adapter[0]
    assert cli(["merge", str(root / "final"), "--out", str(tmp_path / "m"), "--load-in-4bit"]) == 2  # usage
    assert "not supported" in capsys.readouterr().err
    assert cli(["merge", str(root / "base"), "--out", str(tmp_path / "m")]) == 1
    assert "adapter_config.json" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_merge_takes_trust_remote_code_only_from_the_command_line(llava_adapter, tmp_path, monkeypatch, caplog):
    """A downloaded adapter's own mm_unidpo_config.yaml must not decide that the base's remote code runs."""
    import shutil

    from mm_unidpo.models import loading
    from mm_unidpo.train.config import CONFIG_NAME

    root = llava_adapter[0]
    hostile = tmp_path / "downloaded"
    shutil.copytree(root / "final", hostile)
    (hostile / CONFIG_NAME).write_text(yaml.safe_dump({"model": {"family": "llava", "trust_remote_code": True}}))
    seen = []
    real = loading.load_pretrained

    def spy(*args, **kwargs):
        seen.append(kwargs["trust_remote_code"])
        return real(*args, **{**kwargs, "trust_remote_code": False})

    monkeypatch.setattr(merge, "load_pretrained", spy)  # the name merge.py calls
    with caplog.at_level(logging.WARNING, logger="mm_unidpo.train.merge"):
        assert merge.main([str(hostile), "--out", str(tmp_path / "m1")]) == 0
    assert seen == [False] and "it is not taken from there" in caplog.text and "--trust-remote-code" in caplog.text
    assert merge.main([str(hostile), "--out", str(tmp_path / "m2"), "--trust-remote-code"]) == 0
    assert seen == [False, True]


# ---------------------------------------------------------------------------------------------- score

def word_count(record: PreferenceRecord, response: str) -> float:
    """A rule-based scorer for the round trip: the number of words."""
    return float(len(response.split()))


def _records(tmp_path) -> list[PreferenceRecord]:
    Image.new("RGB", (8, 8), (0, 0, 255)).save(tmp_path / "img.png")
    return [
        PreferenceRecord(prompt="<image>\nWhat is on the table?", chosen="A dog and a frisbee.",
                         rejected="A cat, two dogs and a car.", images=["img.png"], id="a", image_root=str(tmp_path)),
        PreferenceRecord(prompt="Describe it.", chosen="A dog.", rejected="Dogs and horses.",
                         score_chosen=9.0, score_rejected=1.0, id="b"),
    ]


def _write(tmp_path, name="pairs.jsonl"):
    return save_preference_data(_records(tmp_path), tmp_path / name)


def test_rule_based_round_trip(tmp_path, capsys):
    source = _write(tmp_path)
    out = tmp_path / "scored.jsonl"
    assert score.main([str(source), "--out", str(out), "--scorer", f"{__name__}:word_count"]) == 0
    assert "scored 1 pairs, kept the scores of 1" in capsys.readouterr().out
    a, b = load_preference_data(out).records
    assert (a.score_chosen, a.score_rejected) == (5.0, 7.0)
    assert (b.score_chosen, b.score_rejected) == (9.0, 1.0)  # existing scores kept
    assert a.images == ["img.png"] and a.prompt.startswith("<image>")
    assert score.main([str(out), "--out", str(out), "--scorer", f"{__name__}:word_count", "--overwrite"]) == 0
    b = load_preference_data(out).records[1]
    assert (b.score_chosen, b.score_rejected) == (2.0, 3.0)


def test_object_overlap_judge(tmp_path):
    objects = tmp_path / "objects.json"
    objects.write_text(json.dumps({"a": ["dog", "frisbee"], "b": ["dog"], "__vocabulary__": ["cat", "car", "horse"]}))
    out = tmp_path / "scored.jsonl"
    assert score.main([str(_write(tmp_path)), "--out", str(out), "--scorer", "object_overlap",
                       "--scorer-arg", f"objects={objects}", "--overwrite"]) == 0
    a, b = load_preference_data(out).records
    assert a.score_chosen == pytest.approx(10.0)  # dog + frisbee, nothing else
    assert a.score_rejected == pytest.approx(10 * 2 * (1 / 3) * 0.5 / (1 / 3 + 0.5))  # dog of {cat, dog, car}
    assert b.score_chosen == pytest.approx(10.0) and b.score_rejected == pytest.approx(10 * 2 * 0.5 / 1.5)


def test_bad_scorer_spec(tmp_path, capsys):
    assert cli(["score", str(_write(tmp_path)), "--out", str(tmp_path / "o.jsonl"), "--scorer", "nope"]) == 1
    assert "module.path:function" in capsys.readouterr().err


def test_reward_model_scores_finite_and_deterministic(reward_model_dir, tmp_path, caplog):
    records = _records(tmp_path)
    items = [(r, text) for r in records for text in (r.chosen, r.rejected)]
    scorer = score.RewardModelScorer(str(reward_model_dir), batch_size=3, device="cpu")
    rendered = scorer.render(records[0], "A dog.")
    assert "<image>" not in rendered and "What is on the table?" in rendered and "A dog." in rendered
    with caplog.at_level(logging.WARNING, logger="mm_unidpo.onpolicy.judges.scorers"):
        first = scorer.score_all(items)
    assert "text-only" in caplog.text
    assert all(math.isfinite(s) for s in first) and len(set(first)) == len(first)
    assert scorer.score_all(items) == first  # deterministic
    scorer.batch_size = 1  # padding must not change a score
    torch.testing.assert_close(torch.tensor(scorer.score_all(items)), torch.tensor(first), atol=1e-5, rtol=0)

    out = tmp_path / "rm.jsonl"
    assert score.main([str(save_preference_data(records, tmp_path / "in.jsonl")), "--out", str(out),
                       "--reward-model", str(reward_model_dir), "--device", "cpu", "--batch-size", "2"]) == 0
    a, b = load_preference_data(out).records
    assert (a.score_chosen, a.score_rejected) == pytest.approx(first[:2], abs=1e-5)
    assert (b.score_chosen, b.score_rejected) == (9.0, 1.0)
