"""Token-budget micro-batches (data/batching.py) and training with them (`data.max_tokens_per_batch`)."""

from __future__ import annotations

import json
import random

import pytest

from mm_unidpo.data.batching import TokenBudgetBatchSampler


def _lengths(n=200, seed=0):
    rng = random.Random(seed)
    return [rng.randint(40, 1200) for _ in range(n)]


def test_every_pair_once_per_epoch_within_budget():
    lengths = _lengths()
    sampler = TokenBudgetBatchSampler(lengths, 2000, seed=3)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(len(lengths)))
        for b in batches:
            assert sum(lengths[i] for i in b) <= 2000 or len(b) == 1
        assert len(batches) == len(sampler)
    sizes = {len(b) for b in batches}
    assert len(sizes) > 2  # short pairs share a micro-batch, long ones do not


def test_deterministic_per_epoch_and_different_across_epochs():
    a, b = TokenBudgetBatchSampler(_lengths(), 3000, seed=1), TokenBudgetBatchSampler(_lengths(), 3000, seed=1)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)


def test_pairs_of_similar_length_share_a_batch():
    """Within a sort window, batches hold pairs of similar length: their spread is far below the data's."""
    lengths = _lengths(256)
    batches = TokenBudgetBatchSampler(lengths, 2500, seed=0, window=256).batches()
    spreads = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches if len(b) > 1]
    assert max(spreads) < 0.5 * (max(lengths) - min(lengths))


def test_a_pair_over_the_budget_goes_alone():
    batches = TokenBudgetBatchSampler([10, 5000, 10, 10], 100, shuffle=False).batches()
    assert [1] in batches and sorted(i for b in batches for i in b) == [0, 1, 2, 3]


def test_ranks_take_disjoint_equal_shares():
    lengths = _lengths(101)
    shares = [list(TokenBudgetBatchSampler(lengths, 1500, seed=5, rank=r, world_size=3)) for r in range(3)]
    assert len({len(s) for s in shares}) == 1
    seen = [i for s in shares for b in s for i in b]
    assert len(seen) == len(set(seen))
    whole = TokenBudgetBatchSampler(lengths, 1500, seed=5)
    assert len(seen) + sum(len(b) for b in whole.batches()[len(shares[0]) * 3:]) == len(lengths)


def test_bad_arguments():
    with pytest.raises(ValueError, match="max_tokens"):
        TokenBudgetBatchSampler([3], 0)
    with pytest.raises(ValueError, match="no pairs"):
        TokenBudgetBatchSampler([], 10)
    with pytest.raises(ValueError, match="max_tokens_per_batch"):
        len(TokenBudgetBatchSampler([5, 5], 100, world_size=2))


def test_training_with_a_token_budget(tmp_path):
    """`data.max_tokens_per_batch`: micro-batches of varying pair counts, the loss falls, and every step's
    batch stays within the budget (logged by the collator)."""
    from mm_unidpo.testing import tiny
    from mm_unidpo.train.config import config_from_dict
    from mm_unidpo.train.run import train
    from mm_unidpo.train.trainer import PairCollator

    model, processor = tiny("causal_lm")
    model.save_pretrained(tmp_path / "lm")
    processor.save_pretrained(tmp_path / "lm")
    rng = random.Random(0)
    with open(tmp_path / "data.jsonl", "w") as f:
        for i in range(24):
            words = " ".join(rng.choice(["red", "blue", "green", "small", "big"]) for _ in range(rng.randint(1, 30)))
            f.write(json.dumps({"id": f"r{i}", "prompt": f"Describe thing {i}.", "chosen": f"It is {words}.",
                                "rejected": "No."}) + "\n")
    seen = []
    real = PairCollator.__call__

    def spy(self, items):
        out = real(self, items)
        seen.append((len(items), out["batch"].blocks.tokens))
        return out

    PairCollator.__call__ = spy
    try:
        raw = {"model": {"name_or_path": str(tmp_path / "lm"), "dtype": "float32"},
               "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
               "data": {"train": str(tmp_path / "data.jsonl"), "max_tokens_per_batch": 300},
               "loss": {"name": "dpo", "params": {"beta": 0.5}},
               "train": {"output_dir": str(tmp_path / "out"), "learning_rate": 5e-3, "num_train_epochs": 3,
                         "logging_steps": 1, "save_strategy": "no", "seed": 0, "use_cpu": True,
                         "disable_tqdm": True}}
        train(config_from_dict(raw).validate())
    finally:
        PairCollator.__call__ = real
    assert len({n for n, _ in seen}) > 1
    assert all(tokens <= 300 or n == 1 for n, tokens in seen)
    assert sum(n for n, _ in seen) == 3 * 24
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    losses = [e["loss"] for e in state["log_history"] if "loss" in e]
    assert sum(losses[-3:]) < sum(losses[:3])
