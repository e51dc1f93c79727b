"""DeepSpeed ZeRO-2 / ZeRO-3 through our fast paths, on 2 CPU processes over gloo (DS_ACCELERATOR=cpu).

DeepSpeed is not in the lock (its sdist builds against torch at install time, which the locked install
cannot do without pulling a CUDA build), so CI skips this module; with DeepSpeed importable it runs, e.g. in
a scratch venv that sees the project's packages (a .pth file naming .venv's site-packages) after
`DS_BUILD_OPS=0 pip install --no-build-isolation deepspeed==0.19.8`. Under ZeRO-3 the LM head's weight is a
partitioned placeholder outside its module's call, and is re-gathered for the backward only through the hook
DeepSpeed puts on the head's returned output: our step must differentiate through what the model returned
(models/logps.py). Each case: the loss and every gradient of two processes on halves of 4 pairs equal one
process on all of them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import yaml
from safetensors.torch import load_file

from mm_unidpo.testing import tiny

from .test_train_fsdp import _free_port, _loss, _model, _records

deepspeed = pytest.importorskip("deepspeed")
pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


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


def _train_config(root: Path, out: str, batch: int) -> Path:
    raw = {
        "model": {"name_or_path": str(root / "model"), "dtype": "float32", "head_chunk_size": 8},
        "lora": {"enabled": False},
        "data": {"train": str(root / "data.jsonl"), "max_length": 128, "on_bad_record": "skip"},
        "loss": {"name": "unidpo", "params": {"beta": 2.0}},
        "reference": {"precompute": True},
        "train": {
            "output_dir": str(root / out),
            "learning_rate": 1e-2,
            "max_steps": 2,
            "seed": 0,
            "per_device_train_batch_size": batch,
            "logging_steps": 1,
            "save_strategy": "no",
            "use_cpu": True,
            "disable_tqdm": True,
        },
    }
    path = root / f"{out}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_accelerate_zero3_full_fine_tuning_with_precompute_equals_one_process(tmp_path):
    """`accelerate launch --config_file configs/accelerate/zero3.yaml` (as the official full fine-tuning
    configs run) with 2 CPU processes: the reference precompute before training needs the weights whole,
    which ZeRO-3 partitions at load (train/setup.py: whole_weights); the pre-flight drops a bad record
    once, the second process reading the first one's verdicts; 2 steps of 2 + 2 pairs equal one process
    on 4 pairs: every logged metric and the saved model."""
    model, processor = tiny("causal_lm", seed=0)
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    keys = ("prompt", "chosen", "rejected", "score_chosen", "score_rejected")
    rows = [{k: getattr(r, k) for k in keys} for r in _records() * 2]
    rows.insert(3, {**rows[0], "prompt": "word " * 200})  # too long for max_length: the pre-flight drops it
    (tmp_path / "data.jsonl").write_text("".join(json.dumps({"id": f"r{i}", **r}) + "\n" for i, r in enumerate(rows)))
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "DS_ACCELERATOR": "cpu",
        "PYTHONPATH": str(REPO),
    }
    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        "2",
        "--mixed_precision",
        "no",
        "--config_file",
        str(REPO / "configs" / "accelerate" / "zero3.yaml"),
    ]
    runs = {
        "two": [*launch, "-m", "mm_unidpo.cli", "train", str(_train_config(tmp_path, "two", 2))],
        "one": [sys.executable, "-m", "mm_unidpo.cli", "train", str(_train_config(tmp_path, "one", 4))],
    }
    for name, command in runs.items():
        result = subprocess.run(command, env=env, capture_output=True, text=True, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        if name == "two":
            for line in (
                "training on 2 processes (DEEPSPEED)",
                "9 records, 9 encoded, 0 verdicts from the cache, 1 dropped",  # the main process first
                "9 records, 0 encoded, 9 verdicts from the cache, 1 dropped",  # then the other, from its cache
            ):
                assert line in result.stderr, result.stderr[-3000:]
    logged = {
        name: [
            e for e in json.loads((tmp_path / name / "trainer_state.json").read_text())["log_history"] if "loss" in e
        ]
        for name in runs
    }
    assert len(logged["one"]) == len(logged["two"]) == 2
    for a, b in zip(logged["one"], logged["two"]):
        assert set(a) == set(b)
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), key
    a = load_file(str(tmp_path / "one" / "final" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "final" / "model.safetensors"))
    assert set(a) == set(b)
    for key in a:
        torch.testing.assert_close(b[key].float(), a[key], rtol=0, atol=1e-4, msg=key)
