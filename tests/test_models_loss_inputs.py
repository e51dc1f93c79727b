"""What WPO (`use_weighting`) and LD-DPO (`ld_alpha`) read beyond the summed log-probs, from the models
layer: each response's sum over its first min(|y_w|, |y_l|) tokens (`*_shared`), and Σ_t log Σ_v p(v)²
(`*_log_sum_sq_probs`, TRL's `log_sum_sq_probs`) from the same head pass — checked in every layout and head
path against a naive one-example forward with the full logits."""

from __future__ import annotations

import json

import pytest
import torch

from mm_unidpo.models import get_adapter
from mm_unidpo.testing import tiny

from .helpers import naive_logp
from .helpers import one_thread  # noqa: F401  (an autouse fixture: importing it applies it to this module)
from .test_models_packed import _records


def _naive_log_sum_sq(model, encoded, response_ids) -> float:
    ids = torch.tensor([encoded.prompt_ids + list(response_ids)])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()
    start = len(encoded.prompt_ids)
    per_position = torch.logsumexp(2 * torch.log_softmax(logits, -1), -1)
    return float(per_position[start - 1:start - 1 + len(response_ids)].sum())


@pytest.mark.parametrize("options", [{}, {"shared_prefix": False}, {"shared_prefix": False, "padding_side": "left"},
                                     {"head_chunk_size": None}], ids=["packed", "plain", "plain-left", "materialised"])
def test_shared_sums_and_log_sum_sq_equal_a_naive_forward(options):
    model, processor = tiny("causal_lm")
    model.eval()
    adapter = get_adapter(model, processor, **options)
    records = _records(text_only=True)
    with torch.no_grad():
        out = adapter.sequence_logps(model, adapter.collate(records), log_sum_sq=True)
    for i, record in enumerate(records):
        e = adapter.encode(record)
        m = min(len(e.chosen_ids), len(e.rejected_ids))
        for name, ids in (("chosen", e.chosen_ids), ("rejected", e.rejected_ids)):
            shared = getattr(out, f"{name}_shared")[i].item()
            assert shared == pytest.approx(naive_logp("causal_lm", model, e, ids[:m]), abs=1e-4)
            log_sum_sq = getattr(out, f"{name}_log_sum_sq_probs")[i].item()
            assert log_sum_sq == pytest.approx(_naive_log_sum_sq(model, e, ids), abs=1e-4)
    assert (out.chosen_shared <= 0).all() and torch.equal(
        torch.minimum(out.chosen_lengths, out.rejected_lengths) == out.chosen_lengths,
        out.chosen_shared == out.chosen_logps)  # the shorter response's shared sum is its whole sum


def test_log_sum_sq_only_when_asked_and_without_gradient():
    model, processor = tiny("causal_lm")
    adapter = get_adapter(model, processor)
    batch = adapter.collate(_records(text_only=True)[:2])
    assert adapter.sequence_logps(model, batch).chosen_log_sum_sq_probs is None
    out = adapter.sequence_logps(model, batch, log_sum_sq=True)
    assert out.chosen_logps.requires_grad and not out.chosen_log_sum_sq_probs.requires_grad


@pytest.mark.parametrize("params", [{"use_weighting": True}, {"ld_alpha": 0.5}], ids=["wpo", "ld_dpo"])
def test_training_with_wpo_or_ld_dpo_runs(tmp_path, params):
    from mm_unidpo.train.config import config_from_dict
    from mm_unidpo.train.run import train

    model, processor = tiny("causal_lm")
    model.save_pretrained(tmp_path / "lm")
    processor.save_pretrained(tmp_path / "lm")
    with open(tmp_path / "data.jsonl", "w") as f:
        for i, r in enumerate(_records(text_only=True)):
            f.write(json.dumps({"id": f"r{i}", "prompt": r.prompt, "chosen": r.chosen, "rejected": r.rejected}) + "\n")
    raw = {"model": {"name_or_path": str(tmp_path / "lm"), "dtype": "float32"},
           "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
           "data": {"train": str(tmp_path / "data.jsonl")},
           "loss": {"name": "dpo", "params": params},
           "train": {"output_dir": str(tmp_path / "out"), "max_steps": 2, "per_device_train_batch_size": 2,
                     "logging_steps": 1, "save_strategy": "no", "use_cpu": True, "disable_tqdm": True}}
    summary = train(config_from_dict(raw).validate())
    assert summary["global_step"] == 2
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    losses = [e["loss"] for e in state["log_history"] if "loss" in e]
    assert len(losses) == 2 and all(l == l and l > 0 for l in losses)  # noqa: E741
