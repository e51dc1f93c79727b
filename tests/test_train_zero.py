"""DeepSpeed ZeRO-2 / ZeRO-3 through our fast paths, on 2 CPU processes over gloo (DS_ACCELERATOR=cpu).

DeepSpeed is not in the lock (its sdist builds against torch at install time, which the locked install
cannot do without pulling a CUDA build), so CI skips this module; with DeepSpeed importable (e.g.
`pip install --no-deps --target DIR deepspeed hjson einops ninja py-cpuinfo msgpack` and PYTHONPATH=DIR)
it runs. Under ZeRO-3 the LM head's weight is a partitioned placeholder outside its module's call, and is
re-gathered for the backward only through the hook DeepSpeed puts on the head's returned output: our
step must differentiate through what the model returned (models/logps.py). Each case: the loss and every
gradient of two processes on halves of 4 pairs equal one process on all of them.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.multiprocessing as mp

from .test_train_fsdp import _free_port, _loss, _model, _records

deepspeed = pytest.importorskip("deepspeed")
pytestmark = pytest.mark.slow


def _worker(rank: int, world: int, port: int, stage: int, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        DS_ACCELERATOR="cpu",
    )
    torch.set_num_threads(1)
    import deepspeed as ds
    import torch.distributed as dist

    ds.init_distributed(dist_backend="gloo")
    config = {
        "train_micro_batch_size_per_gpu": 2,
        "gradient_accumulation_steps": 1,
        "zero_optimization": {"stage": stage},
        "zero_allow_untested_optimizer": True,
        "optimizer": {"type": "SGD", "params": {"lr": 0.1}},
    }
    model, processor = _model(lora=False)
    engine, *_ = ds.initialize(model=model, config=config, model_parameters=list(model.parameters()))
    loss = _loss(engine, processor, _records()[rank * 2 : (rank + 1) * 2], None)
    engine.backward(loss)
    grads = {n: ds.utils.safe_get_full_grad(p).clone() for n, p in engine.module.named_parameters()}
    total = loss.detach().clone()
    dist.all_reduce(total)
    if rank == 0:
        torch.save({"loss": total / world, "grads": grads}, out)
    dist.destroy_process_group()


@pytest.mark.parametrize("stage", [2, 3])
def test_zero_two_processes_equal_one_process(tmp_path, stage):
    torch.set_num_threads(1)
    model, processor = _model(lora=False)
    loss = sum(_loss(model, processor, _records()[k * 2 : (k + 1) * 2], None) for k in range(2)) / 2
    loss.backward()
    out, port = str(tmp_path / "rank0.pt"), _free_port()
    processes = [mp.get_context("spawn").Process(target=_worker, args=(rank, 2, port, stage, out)) for rank in range(2)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(timeout=300)
    assert all(p.exitcode == 0 for p in processes), [p.exitcode for p in processes]
    sharded = torch.load(out)
    torch.testing.assert_close(sharded["loss"], loss.detach(), rtol=1e-5, atol=1e-6)
    for name, param in model.named_parameters():
        torch.testing.assert_close(sharded["grads"][name], param.grad, rtol=1e-4, atol=1e-6, msg=name)
