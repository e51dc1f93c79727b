"""Sharded parameters through our fast paths: torch's FSDP2 (`fully_shard`) on 2 CPU processes over gloo.

The chunked head reads the LM head's weight inside the head's own call (models/head.py), so it is the
gathered weight there and the backward re-gathers it; the packed layout's per-pair attention and the
LoRA reference (adapter disabled) run inside the sharded modules. Each case: two processes, each on its
half of a global batch of 4 pairs, give the loss and every gradient of one process on the whole batch
(the mean of the two halves' means, as DDP / FSDP average). Root resharding after forward is on, the
hardest case (the head's weight is a shard outside the forward).
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mm_unidpo.data import PreferenceRecord
from mm_unidpo.losses import PairLogps, preference_loss
from mm_unidpo.models import get_adapter
from mm_unidpo.testing import tiny

pytestmark = pytest.mark.slow

UNIDPO = dict(beta=2.0, eta=0.7, gamma=3.0, tau_ref=2.0, tau_good=2.5, nll_weight=0.01)


def _records() -> list[PreferenceRecord]:
    return [PreferenceRecord(f"Question {i}: what is {i} plus {i}?", f"It is {2 * i}, clearly {'so ' * i}.",
                             f"Maybe {i}.", score_chosen=8.0 - i, score_rejected=2.0 + i / 2, id=str(i), index=i)
            for i in range(4)]


def _model(lora: bool):
    model, processor = tiny("causal_lm", seed=0)
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                 lora_dropout=0.0, init_lora_weights=False))
    return model, processor


def _loss(model, processor, records, lora: bool) -> torch.Tensor:
    """Our step: packed layout, chunked head, Uni-DPO; the reference is the base without the adapter
    (LoRA), or fixed log-probs (full fine-tuning: a frozen copy would hold no sharding question)."""
    adapter = get_adapter(model, processor, head_chunk_size=8)
    batch = adapter.collate(records)
    assert batch.layout == "packed"
    policy = adapter.sequence_logps(model, batch)
    if lora:
        with torch.no_grad(), model.disable_adapter():
            ref = adapter.sequence_logps(model, batch)
        ref_chosen, ref_rejected = ref.chosen_logps, ref.rejected_logps
    else:
        ref_chosen, ref_rejected = policy.chosen_logps.detach() - 1.0, policy.rejected_logps.detach() + 0.5
    pair = PairLogps(policy_chosen=policy.chosen_logps, policy_rejected=policy.rejected_logps,
                     chosen_lengths=policy.chosen_lengths, rejected_lengths=policy.rejected_lengths,
                     reference_chosen=ref_chosen, reference_rejected=ref_rejected,
                     score_chosen=batch.score_chosen, score_rejected=batch.score_rejected)
    return preference_loss("unidpo", pair, **UNIDPO).loss


def _worker(rank: int, world: int, port: int, lora: bool, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    from torch.distributed.fsdp import fully_shard

    model, processor = _model(lora)
    layers = model.base_model.model.model.layers if lora else model.model.layers
    for layer in layers:
        fully_shard(layer)
    fully_shard(model, reshard_after_forward=True)
    records = _records()[rank * 2:(rank + 1) * 2]
    loss = _loss(model, processor, records, lora)
    loss.backward()
    total = loss.detach().clone()
    dist.all_reduce(total)
    grads = {n: p.grad.full_tensor() for n, p in model.named_parameters() if p.grad is not None}
    if rank == 0:
        torch.save({"loss": total / world, "grads": grads}, out)
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_fsdp2_two_processes_equal_one_process(tmp_path, lora):
    torch.set_num_threads(1)
    model, processor = _model(lora)
    halves = [_loss(model, processor, _records()[k * 2:(k + 1) * 2], lora) for k in range(2)]
    loss = (halves[0] + halves[1]) / 2
    loss.backward()
    expected = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert any("lm_head" in n for n in expected) != lora  # full fine-tuning trains the (chunked) head

    out = str(tmp_path / "rank0.pt")
    context = mp.get_context("spawn")
    port = _free_port()
    processes = [context.Process(target=_worker, args=(rank, 2, port, lora, out)) for rank in range(2)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(timeout=300)
    assert all(p.exitcode == 0 for p in processes), [p.exitcode for p in processes]
    sharded = torch.load(out)
    torch.testing.assert_close(sharded["loss"], loss.detach(), rtol=1e-5, atol=1e-6)
    assert set(sharded["grads"]) == set(expected)
    for name, grad in expected.items():
        torch.testing.assert_close(sharded["grads"][name], grad, rtol=1e-4, atol=1e-6, msg=name)


def _reference_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    from torch.distributed.fsdp import fully_shard

    from mm_unidpo.train.reference import compute_reference_logps

    model, processor = _model(lora=True)
    for layer in model.base_model.model.model.layers:
        fully_shard(layer)
    fully_shard(model, reshard_after_forward=True)
    adapter = get_adapter(model, processor, head_chunk_size=8)
    values = compute_reference_logps(model, adapter, _records(), batch_size=3, device="cpu", disable_adapter=True)
    if rank == 0:
        torch.save(values, out)
    dist.destroy_process_group()


def test_fsdp2_reference_precompute_equals_one_process(tmp_path):
    """The reference pass (adapter disabled, no gradient) over sharded parameters: every rank computes every
    record, as the trainer's precompute does, and gets one process's values."""
    from mm_unidpo.train.reference import compute_reference_logps

    torch.set_num_threads(1)
    model, processor = _model(lora=True)
    expected = compute_reference_logps(model, get_adapter(model, processor, head_chunk_size=8), _records(),
                                       batch_size=3, device="cpu", disable_adapter=True)
    out, port = str(tmp_path / "rank0.pt"), _free_port()
    processes = [mp.get_context("spawn").Process(target=_reference_worker, args=(rank, 2, port, out))
                 for rank in range(2)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(timeout=300)
    assert all(p.exitcode == 0 for p in processes), [p.exitcode for p in processes]
    sharded = torch.load(out)
    for key, value in expected.items():
        torch.testing.assert_close(sharded[key], value, rtol=1e-5, atol=1e-5, msg=key)
