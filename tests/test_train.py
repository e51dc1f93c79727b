"""End-to-end training through `mm-unidpo train` on tiny offline models: learning, QLoRA on CPU,
the reference cache, exact resume after SIGKILL, atomic checkpoints, and 2-process DDP equality."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from mm_unidpo.data import PreferenceRecord
from mm_unidpo.train.config import config_from_dict
from mm_unidpo.train.run import train

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO.parent / "shared" / "data" / "images"
pytestmark = pytest.mark.skipif(not IMAGES.is_dir(), reason=f"real photos not found at {IMAGES}")
PHOTOS = ["astronaut.png", "camera.png", "chelsea.png", "coffee.png", "horse.png", "rocket.jpg"]


def _save_tiny(family: str, root: Path) -> Path:
    from mm_unidpo.testing import tiny

    model, processor = tiny(family)
    path = root / family
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train")
    # A small learnable dataset: the chosen answer names the photo, the rejected one is always the same
    # hallucinated scene. Scores make Uni-DPO's quality weight and NLL gate take part.
    with open(root / "data.jsonl", "w") as f:
        for i in range(24):
            photo = PHOTOS[i % len(PHOTOS)]
            f.write(json.dumps({
                "id": f"r{i}", "prompt": "<image>\nWhat is in the image?", "images": [photo],
                "chosen": f"It is a {photo.split('.')[0]}.",
                "rejected": "It is a red bus with many people on a sunny street.",
                "score_chosen": 8.0 + (i % 3), "score_rejected": 2.0}) + "\n")
    return root


@pytest.fixture(scope="module")
def llava_path(workdir) -> Path:
    return _save_tiny("llava", workdir)


def _config(model_path: Path, workdir: Path, out: str, **sections) -> dict:
    raw = {
        "model": {"name_or_path": str(model_path), "dtype": "float32"},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
        "data": {"train": str(workdir / "data.jsonl"), "image_root": str(IMAGES), "max_length": 256},
        "loss": {"name": "unidpo", "params": {"beta": 2.0}},
        "train": {"output_dir": str(workdir / out), "learning_rate": 5e-3, "num_train_epochs": 2,
                  "per_device_train_batch_size": 4, "logging_steps": 1, "save_strategy": "no", "seed": 0,
                  "use_cpu": True, "disable_tqdm": True},
    }
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return raw


def _run(raw: dict) -> dict:
    return train(config_from_dict(raw).validate())


def _logged(output_dir: str, key: str) -> list[float]:
    state = json.loads((Path(output_dir) / "trainer_state.json").read_text())
    return [e[key] for e in state["log_history"] if key in e and "train_runtime" not in e]


def _learns(output_dir: str) -> None:
    losses, accuracies = _logged(output_dir, "loss"), _logged(output_dir, "rewards/accuracies")
    margins = _logged(output_dir, "rewards/margins")
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3, losses
    assert sum(margins[-3:]) / 3 > sum(margins[:3]) / 3, margins
    assert accuracies[-1] >= accuracies[0] and accuracies[-1] == 1.0, accuracies


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_lora_training_learns_and_saves_a_plain_peft_adapter(family, workdir):
    model_path = _save_tiny(family, workdir)
    raw = _config(model_path, workdir, f"out_{family}")
    summary = _run(raw)
    out = raw["train"]["output_dir"]
    _learns(out)
    final = Path(summary["final_dir"])
    assert (final / "adapter_model.safetensors").is_file() and (final / "mm_unidpo_config.yaml").is_file()
    assert (Path(out) / "report.md").is_file() and (Path(out) / "training_curves.png").is_file()
    assert (Path(out) / "pair_weights.png").is_file()

    # The adapter loads with plain transformers + peft and scores like the trained policy.
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    from mm_unidpo.models import get_adapter
    from mm_unidpo.models.loading import load_processor

    base = AutoModelForImageTextToText.from_pretrained(model_path, dtype=torch.float32)
    plain = PeftModel.from_pretrained(base, final).eval()
    processor = load_processor(str(model_path), family)
    adapter = get_adapter(plain, processor)
    record = PreferenceRecord("<image>\nWhat is in the image?", "It is a horse.", "It is a red bus.",
                              images=["horse.png"], image_root=str(IMAGES), id="x", index=0)
    with torch.no_grad():
        tuned = adapter.sequence_logps(plain, adapter.collate([record]))
        with plain.disable_adapter():
            untuned = adapter.sequence_logps(plain, adapter.collate([record]))
    tuned_margin = (tuned.chosen_logps - tuned.rejected_logps).item()
    untuned_margin = (untuned.chosen_logps - untuned.rejected_logps).item()
    assert tuned_margin > untuned_margin + 1.0


def test_qlora_4bit_on_cpu_learns_with_frozen_unquantised_vision(workdir, llava_path):
    pytest.importorskip("bitsandbytes")
    from mm_unidpo.models.loading import quantised_module_names

    raw = _config(llava_path, workdir, "out_qlora", model={"load_in_4bit": True}, loss={"name": "dpo", "params": {"beta": 0.5}},
                  train={"gradient_checkpointing": True, "num_train_epochs": 2})
    from mm_unidpo.train.setup import build_models

    model, _, reference = build_models(config_from_dict(raw).validate(), gradient_checkpointing=True)
    names = quantised_module_names(model)
    assert reference is None and names and all("language_model" in n for n in names), names
    vision_params = [p for n, p in model.named_parameters() if "vision_tower" in n or "multi_modal_projector" in n]
    assert vision_params and not any(p.requires_grad for p in vision_params)
    assert all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    _run(raw)
    _learns(raw["train"]["output_dir"])


def test_reference_cache_hits_and_invalidates(workdir, llava_path, monkeypatch):
    from mm_unidpo.data import load_preference_data
    from mm_unidpo.models import get_adapter
    from mm_unidpo.models.loading import load_pretrained
    from mm_unidpo.train import reference as ref

    model, processor = load_pretrained(str(llava_path), dtype="float32")
    records = load_preference_data(workdir / "data.jsonl", image_root=IMAGES).records[:6]
    adapter = get_adapter(model, processor, max_length=256)
    settings = {"name_or_path": str(llava_path)}
    key = ref.cache_key(records, model, adapter, settings)
    calls = []

    def compute():
        calls.append(1)
        return ref.compute_reference_logps(model, adapter, records, batch_size=4, device="cpu", disable_adapter=False)

    first, hit1 = ref.load_or_compute(workdir / "cache", key, compute)
    again, hit2 = ref.load_or_compute(workdir / "cache", key, compute)
    assert (hit1, hit2, len(calls)) == (False, True, 1)
    torch.testing.assert_close(first["chosen"], again["chosen"])
    assert torch.isfinite(first["chosen"]).all() and (first["chosen_lengths"] > 0).all()

    # Each of these must change the key: max length, an image's bytes, the chat template, the model.
    assert ref.cache_key(records, model, get_adapter(model, processor, max_length=200), settings) != key
    altered = [PreferenceRecord(**{**r.__dict__}) for r in records]
    from PIL import Image

    altered[0].images = [Image.open(IMAGES / "camera.png").convert("RGB")]
    assert ref.cache_key(altered, model, adapter, settings) != key
    original_template = processor.chat_template
    processor.chat_template = original_template.replace("ASSISTANT:", "ASSISTANT :")
    try:
        assert ref.cache_key(records, model, adapter, settings) != key
    finally:
        processor.chat_template = original_template
    model.config.text_config.rms_norm_eps = 1e-5
    assert ref.cache_key(records, model, adapter, settings) != key


def test_precomputed_reference_trains_like_the_live_reference(workdir, llava_path):
    live = _config(llava_path, workdir, "ref_live", train={"num_train_epochs": 1})
    cached = _config(llava_path, workdir, "ref_cached", train={"num_train_epochs": 1},
                     reference={"precompute": True, "batch_size": 3})
    _run(live)
    _run(cached)
    a = load_file(str(workdir / "ref_live" / "final" / "adapter_model.safetensors"))
    b = load_file(str(workdir / "ref_cached" / "final" / "adapter_model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    assert list((workdir / "ref_cached" / "reference_cache").glob("ref-*.safetensors"))


def test_skip_policy_counts_prompts_that_leave_no_room(workdir, llava_path):
    raw = _config(llava_path, workdir, "out_skip", data={"max_length": 52, "on_bad_record": "skip"},
                  train={"num_train_epochs": 1})
    # The usual prompt takes 40 tokens (16 for the image): at 52 the 19-token rejected answer is cut,
    # and a long prompt leaves no room for any response token.
    with open(workdir / "data_long.jsonl", "w") as f:
        for line in open(workdir / "data.jsonl"):
            f.write(line)
        f.write(json.dumps({"id": "too-long", "prompt": "<image>\n" + "describe every detail " * 20,
                            "images": ["rocket.jpg"], "chosen": "A rocket.", "rejected": "A bus."}) + "\n")
    raw["data"]["train"] = str(workdir / "data_long.jsonl")
    summary = _run(raw)
    assert summary["skipped_records"].get("prompt_too_long") == 1
    assert summary["truncated_pairs"] > 0


# ---- checkpoints: atomic writes, exact resume after SIGKILL, DDP -----------------------------------

def _write_config(raw: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(raw))
    return path


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false"}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "mm_unidpo.cli", "train", *args]


def test_crash_mid_save_leaves_no_checkpoint_that_resume_would_pick(workdir, llava_path, monkeypatch):
    from transformers.trainer_utils import get_last_checkpoint

    from mm_unidpo.train.trainer import PreferenceTrainer

    raw = _config(llava_path, workdir, "out_crash", train={"max_steps": 4, "save_strategy": "steps", "save_steps": 2,
                                                           "num_train_epochs": 1})
    real_save = PreferenceTrainer._save_rng_state
    calls = {"n": 0}

    def crash_on_second_save(self, output_dir):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated crash while writing checkpoint-4")
        return real_save(self, output_dir)

    monkeypatch.setattr(PreferenceTrainer, "_save_rng_state", crash_on_second_save)
    with pytest.raises(KeyboardInterrupt):
        _run(raw)
    out = raw["train"]["output_dir"]
    assert os.path.isdir(os.path.join(out, "tmp-checkpoint-4"))
    assert get_last_checkpoint(out) == os.path.join(out, "checkpoint-2")


@pytest.mark.slow
def test_resume_after_sigkill_matches_an_uninterrupted_run(workdir, llava_path):
    base = _config(llava_path, workdir, "resume_full", lora={"dropout": 0.1},  # dropout: the RNG state matters
                   train={"max_steps": 8, "save_strategy": "steps", "save_steps": 1, "num_train_epochs": 3,
                          "per_device_train_batch_size": 3, "logging_steps": 1})
    full_cfg = _write_config(base, workdir / "resume_full.yaml")
    subprocess.run(_cli(str(full_cfg)), check=True, env=_env(), capture_output=True, cwd=REPO)

    killed_dir = workdir / "resume_killed"
    killed = _write_config({**base, "train": {**base["train"], "output_dir": str(killed_dir)}},
                           workdir / "resume_killed.yaml")
    kill_after = random.Random(os.getpid()).randint(2, 6)  # a random step, reported on failure
    proc = subprocess.Popen(_cli(str(killed)), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=REPO)
    deadline = time.time() + 120
    while not (killed_dir / f"checkpoint-{kill_after}").is_dir():
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed_dir / "final").exists(), f"killed after checkpoint-{kill_after} but the run had finished"
    subprocess.run(_cli(str(killed), "--train.resume_from_checkpoint=true"), check=True, env=_env(),
                   capture_output=True, cwd=REPO)
    a = load_file(str(workdir / "resume_full" / "final" / "adapter_model.safetensors"))
    b = load_file(str(killed_dir / "final" / "adapter_model.safetensors"))
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6, msg=f"killed after checkpoint-{kill_after}: {k}")


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_with_the_same_global_batch(workdir, llava_path):
    one = _config(llava_path, workdir, "ddp1", train={"max_steps": 4, "per_device_train_batch_size": 4})
    two = _config(llava_path, workdir, "ddp2", train={"max_steps": 4, "per_device_train_batch_size": 2})
    subprocess.run(_cli(str(_write_config(one, workdir / "ddp1.yaml"))), check=True, env=_env(),
                   capture_output=True, cwd=REPO)
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                str(REPO / "configs" / "accelerate" / "ddp.yaml"), "--num_processes", "2",
                "--mixed_precision", "no",  # the shipped config says bf16 (GPUs); the 1-process run is fp32
                "-m", "mm_unidpo.cli", "train", str(_write_config(two, workdir / "ddp2.yaml"))]
    if not (REPO / "configs" / "accelerate" / "ddp.yaml").is_file():
        launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                    "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                    "-m", "mm_unidpo.cli", "train", str(workdir / "ddp2.yaml")]
    result = subprocess.run(launcher, env=_env(), capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    state = json.loads((workdir / "ddp2" / "trainer_state.json").read_text())
    assert state["global_step"] == 4 and abs(state["epoch"] - 4 * 4 / 24) < 1e-6  # 2 x 2 pairs a step
    a = load_file(str(workdir / "ddp1" / "final" / "adapter_model.safetensors"))
    b = load_file(str(workdir / "ddp2" / "final" / "adapter_model.safetensors"))
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-5)


def test_mixture_logs_each_component_and_resume_restores_bco_delta(workdir, llava_path):
    """The mpo preset (sigmoid 0.8, bco_pair 0.2, sft 1.0): metrics under each component's name, and
    bco_pair's running-mean δ saved with each checkpoint and put back on resume."""
    import shutil

    raw = _config(llava_path, workdir, "out_mpo", loss={"name": "mpo", "params": {"beta": 0.5}},
                  train={"max_steps": 4, "save_strategy": "steps", "save_steps": 2, "num_train_epochs": 1})
    _run(raw)
    out = Path(raw["train"]["output_dir"])
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    saved = state["stateful_callbacks"]["LossStateCallback"]["attributes"]["saved"]
    assert saved["bco_pair"]["count"] == 4
    logged = state["log_history"][0]
    for key in ("loss/sigmoid", "loss/bco_pair", "loss/sft", "sigmoid/rewards/margins", "bco_pair/bco/delta",
                "rewards/margins"):
        assert key in logged, key

    resumed = workdir / "out_mpo_resumed"
    resumed.mkdir()
    shutil.copytree(out / "checkpoint-2", resumed / "checkpoint-2")
    _run({**raw, "train": {**raw["train"], "output_dir": str(resumed), "resume_from_checkpoint": True}})
    again = json.loads((resumed / "checkpoint-4" / "trainer_state.json").read_text())
    assert again["stateful_callbacks"]["LossStateCallback"]["attributes"]["saved"]["bco_pair"] == pytest.approx(
        saved["bco_pair"], rel=1e-6)
    deltas = [e["bco_pair/bco/delta"] for e in again["log_history"] if "bco_pair/bco/delta" in e]
    assert deltas[-1] == pytest.approx(saved["bco_pair"]["mean"], rel=1e-6)


# ---- TR-DPO: the reference moves towards the policy (train/sync.py) ------------------------------------

def _sync_config(llava_path, workdir, out, reference=None, **sections):
    return _config(llava_path, workdir, out, loss={"name": "dpo", "params": {"beta": 0.5}},
                   reference={"sync_ref_model": True, "ref_model_mixup_alpha": 1.0, "ref_model_sync_steps": 2,
                              **(reference or {})},
                   train={"max_steps": 4, "save_strategy": "steps", "save_steps": 2, "num_train_epochs": 1},
                   **sections)


def test_trdpo_lora_reference_is_the_synced_adapter_and_resume_restores_it(workdir, llava_path):
    import shutil

    raw = _sync_config(llava_path, workdir, "out_trdpo")
    _run(raw)
    out = Path(raw["train"]["output_dir"])
    reference = load_file(str(out / "checkpoint-4" / "reference_sync.safetensors"))
    adapter = load_file(str(out / "checkpoint-4" / "adapter_model.safetensors"))
    assert reference and {k.replace(".default", "") for k in reference} == set(adapter)
    for name, tensor in reference.items():  # α = 1: a hard sync at step 4 copies the adapter
        torch.testing.assert_close(tensor, adapter[name.replace(".default", "")], rtol=0, atol=0)
    before = load_file(str(out / "checkpoint-2" / "reference_sync.safetensors"))
    assert any(not torch.equal(before[k], reference[k]) for k in reference)

    resumed = workdir / "out_trdpo_resumed"
    resumed.mkdir()
    shutil.copytree(out / "checkpoint-2", resumed / "checkpoint-2")
    _run({**raw, "train": {**raw["train"], "output_dir": str(resumed), "resume_from_checkpoint": True}})
    again = load_file(str(resumed / "final" / "adapter_model.safetensors"))
    final = load_file(str(out / "final" / "adapter_model.safetensors"))
    for k in final:
        torch.testing.assert_close(again[k], final[k], rtol=0, atol=1e-6)


def test_trdpo_full_finetuning_mixes_the_frozen_copy(workdir, llava_path):
    raw = _sync_config(llava_path, workdir, "out_trdpo_full", lora={"enabled": False},
                       reference={"ref_model_sync_steps": 4})
    _run(raw)
    out = Path(raw["train"]["output_dir"])
    reference = load_file(str(out / "checkpoint-4" / "reference_sync.safetensors"))
    # the saved checkpoint names the same tensors in transformers' on-disk layout (language_model.model.*)
    norm = lambda key: ".".join(p for p in key.split(".") if p not in ("model", "language_model"))  # noqa: E731
    model = {norm(k): v for k, v in load_file(str(out / "checkpoint-4" / "model.safetensors")).items()}
    shared = [k for k in reference if norm(k) in model]
    assert len(shared) == len(reference), sorted(set(map(norm, reference)) - set(model))[:3]
    for k in shared:
        torch.testing.assert_close(reference[k], model[norm(k)], rtol=0, atol=0)
    before = load_file(str(out / "checkpoint-2" / "reference_sync.safetensors"))  # not synced yet at step 2
    assert any(not torch.equal(before[k], reference[k]) for k in shared)


@pytest.mark.parametrize("change,message", [
    ({"loss": {"name": "simpo", "params": {}}}, "reads no reference"),
    ({"reference": {"precompute": True}}, "the precomputed reference"),
    ({"reference": {"ref_model_mixup_alpha": 0.0}}, r"ref_model_mixup_alpha must be in \(0, 1\]"),
    ({"reference": {"ref_model_sync_steps": 0}}, "ref_model_sync_steps must be >= 1"),
])
def test_trdpo_config_is_checked(workdir, llava_path, change, message):
    from mm_unidpo.train.config import ConfigError

    raw = _sync_config(llava_path, workdir, "out_trdpo_bad")
    for section, values in change.items():
        raw[section] = {**raw[section], **values} if section == "reference" else values
    with pytest.raises(ConfigError, match=message):
        config_from_dict(raw).validate()
