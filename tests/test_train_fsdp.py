"""Sharded parameters through our fast paths: torch's FSDP2 (`fully_shard`) and FSDP1
(`FullyShardedDataParallel`, `use_orig_params=True`, `device_id=cpu`) on 2 CPU processes over gloo.

The chunked head reads the LM head's weight inside the head's own call (models/head.py), so it is the
gathered weight there and the backward re-gathers it; the packed layout's per-pair attention, the LoRA
reference (adapter disabled) and a frozen full-fine-tuning reference run inside sharded modules. Each
case: two processes, each on its half of a global batch of 4 pairs, give the loss and every gradient of
one process on the whole batch (the mean of the two halves' means, as DDP / FSDP average). FSDP2's root
reshards after forward, the hardest case (the head's weight is a shard outside the forward).

One spawn of two workers runs every case (starting processes is what costs here); the module fixture
keeps its results for the tests. Not `accelerate launch`: accelerate runs FSDP on GPUs only (with
train.use_cpu it trains as plain DDP, which tests/test_train.py covers; the trainer warns).
"""

from __future__ import annotations

import copy
import os
import socket
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mm_unidpo.data import PreferenceRecord
from mm_unidpo.losses import PairLogps, preference_loss
from mm_unidpo.models import get_adapter
from mm_unidpo.testing import tiny

UNIDPO = dict(beta=2.0, eta=0.7, gamma=3.0, tau_ref=2.0, tau_good=2.5, nll_weight=0.01)
# (sharding, fine-tuning): every pair of the two
CASES = [("fsdp2", "lora"), ("fsdp2", "full"), ("fsdp1", "lora"), ("fsdp1", "full")]


def _records() -> list[PreferenceRecord]:
    return [
        PreferenceRecord(
            f"Question {i}: what is {i} plus {i}?",
            f"It is {2 * i}, clearly {'so ' * i}.",
            f"Maybe {i}.",
            score_chosen=8.0 - i,
            score_rejected=2.0 + i / 2,
            id=str(i),
            index=i,
        )
        for i in range(4)
    ]


def _model(lora: bool):
    model, processor = tiny("causal_lm", seed=0)
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(
                r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0, init_lora_weights=False
            ),
        )
    return model, processor


def _loss(model, processor, records, reference) -> torch.Tensor:
    """Our step: packed layout, chunked head, Uni-DPO. `reference`: "adapter" (LoRA: the base with the
    adapter disabled), a frozen model, or None (fixed log-probs, for engines that own the model)."""
    adapter = get_adapter(model, processor, head_chunk_size=8)
    batch = adapter.collate(records)
    assert batch.layout == "packed"
    policy = adapter.sequence_logps(model, batch)
    with torch.no_grad():
        if reference == "adapter":
            with model.disable_adapter():
                ref = adapter.sequence_logps(model, batch)
            ref_chosen, ref_rejected = ref.chosen_logps, ref.rejected_logps
        elif reference is not None:
            ref = adapter.sequence_logps(reference, batch)
            ref_chosen, ref_rejected = ref.chosen_logps, ref.rejected_logps
        else:
            ref_chosen, ref_rejected = policy.chosen_logps.detach() - 1.0, policy.rejected_logps.detach() + 0.5
    pair = PairLogps(
        policy_chosen=policy.chosen_logps,
        policy_rejected=policy.rejected_logps,
        chosen_lengths=policy.chosen_lengths,
        rejected_lengths=policy.rejected_lengths,
        reference_chosen=ref_chosen,
        reference_rejected=ref_rejected,
        score_chosen=batch.score_chosen,
        score_rejected=batch.score_rejected,
    )
    return preference_loss("unidpo", pair, **UNIDPO).loss


def _policy_and_reference(tuning: str):
    """(policy, processor, reference) as the trainer has them: LoRA's reference is the adapter disabled,
    full fine-tuning's a frozen copy."""
    model, processor = _model(tuning == "lora")
    reference = "adapter" if tuning == "lora" else copy.deepcopy(model).eval().requires_grad_(False)
    return model, processor, reference


def _decoder_layers(model) -> list[torch.nn.Module]:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return list(base.model.layers)


def _fsdp2(model):
    from torch.distributed.fsdp import fully_shard

    for layer in _decoder_layers(model):
        fully_shard(layer)
    return fully_shard(model, reshard_after_forward=True)


def _fsdp1(model):
    """As accelerate wraps it (fsdp_version 1): decoder layers as units, original parameters kept."""
    from torch.distributed.fsdp import FullyShardedDataParallel
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    layer_class = type(_decoder_layers(model)[0])
    return FullyShardedDataParallel(
        model, use_orig_params=True, auto_wrap_policy=ModuleWrapPolicy({layer_class}), device_id=torch.device("cpu")
    )


def _full_grads(sharding: str, model) -> dict[str, torch.Tensor]:
    if sharding == "fsdp2":
        return {n: p.grad.full_tensor() for n, p in model.named_parameters() if p.grad is not None}
    from torch.distributed.fsdp import FullyShardedDataParallel

    with FullyShardedDataParallel.summon_full_params(model, with_grads=True):  # frozen ones share flat grads
        return {
            n.replace("_fsdp_wrapped_module.", ""): p.grad.clone()
            for n, p in model.named_parameters()
            if p.grad is not None and p.requires_grad
        }


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    from mm_unidpo.train.reference import compute_reference_logps

    shard = {"fsdp1": _fsdp1, "fsdp2": _fsdp2}
    results: dict[str, object] = {}
    for sharding, tuning in CASES:
        model, processor, reference = _policy_and_reference(tuning)
        model = shard[sharding](model)
        if not isinstance(reference, str):
            reference = shard[sharding](reference)
        loss = _loss(model, processor, _records()[rank * 2 : (rank + 1) * 2], reference)
        loss.backward()
        total = loss.detach().clone()
        dist.all_reduce(total)
        results[f"{sharding}-{tuning}"] = {"loss": total / world, "grads": _full_grads(sharding, model)}
    # the reference precompute (adapter disabled, no gradient): every rank computes every record
    model, processor = _model(lora=True)
    model = _fsdp2(model)
    results["precompute"] = compute_reference_logps(
        model,
        get_adapter(model, processor, head_chunk_size=8),
        _records(),
        batch_size=3,
        device="cpu",
        disable_adapter=True,
    )
    if rank == 0:
        torch.save(results, out)
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(target, args: tuple, world: int = 2) -> None:
    context = mp.get_context("spawn")
    processes = [context.Process(target=target, args=(rank, world, *args)) for rank in range(world)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(timeout=300)
    assert all(p.exitcode == 0 for p in processes), [p.exitcode for p in processes]


@pytest.fixture(scope="module")
def sharded(tmp_path_factory) -> dict:
    out = str(tmp_path_factory.mktemp("fsdp") / "rank0.pt")
    _spawn(_worker, (_free_port(), out))
    return torch.load(out)


@pytest.mark.slow
@pytest.mark.parametrize("sharding,tuning", CASES, ids=[f"{s}-{t}" for s, t in CASES])
def test_two_sharded_processes_equal_one_process(sharded, sharding, tuning):
    torch.set_num_threads(1)
    model, processor, reference = _policy_and_reference(tuning)
    halves = [_loss(model, processor, _records()[k * 2 : (k + 1) * 2], reference) for k in range(2)]
    loss = (halves[0] + halves[1]) / 2
    loss.backward()
    expected = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert any("lm_head" in n for n in expected) == (tuning == "full")  # full fine-tuning trains the chunked head
    got = sharded[f"{sharding}-{tuning}"]
    torch.testing.assert_close(got["loss"], loss.detach(), rtol=1e-5, atol=1e-6)
    assert set(got["grads"]) == set(expected)
    for name, grad in expected.items():
        torch.testing.assert_close(got["grads"][name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.slow
def test_fsdp2_reference_precompute_equals_one_process(sharded):
    """The reference pass (adapter disabled, no gradient) over sharded parameters, as the trainer's
    precompute runs it on every rank, gives one process's values."""
    from mm_unidpo.train.reference import compute_reference_logps

    torch.set_num_threads(1)
    model, processor = _model(lora=True)
    expected = compute_reference_logps(
        model,
        get_adapter(model, processor, head_chunk_size=8),
        _records(),
        batch_size=3,
        device="cpu",
        disable_adapter=True,
    )
    for key, value in expected.items():
        torch.testing.assert_close(sharded["precompute"][key], value, rtol=1e-5, atol=1e-5, msg=key)


def test_a_launch_that_did_not_shard_is_named_in_a_warning(monkeypatch, caplog):
    """`accelerate launch` with an FSDP config on a machine where accelerate will not shard (no GPU),
    and without train.use_cpu: each process trains alone. Both are said, not left to be found out."""
    from accelerate import PartialState

    from mm_unidpo.train.trainer import LaunchLog

    PartialState()  # this (single) process's state, before the launch variables below are seen
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    args, state = SimpleNamespace(world_size=1), SimpleNamespace(is_world_process_zero=True)
    with caplog.at_level("WARNING", logger="mm_unidpo.train.trainer"):
        LaunchLog().on_train_begin(args, state, None, model=torch.nn.Linear(1, 1))
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 2, warned
    assert "launched as 2 processes but training sees 1" in warned[0]
    assert "asked for FSDP but training runs as NO" in warned[1]
