"""Faults around `mm-unidpo train`: bad records found before step 1 (or skipped once, batches full), bad configs
and models named at load time, the reference cache trusting nothing on disk, a full disk during a checkpoint,
one clear message from the CLI, and `.bin` weights read as tensors only (`mm-unidpo convert`)."""

from __future__ import annotations

import errno
import io
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import save_file

from mm_unidpo.train.config import ConfigError, config_from_dict, load_config
from mm_unidpo.train.run import EmptyDataError, train


pytestmark = pytest.mark.usefixtures("single_thread")


def _jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    from mm_unidpo.testing import tiny

    root = tmp_path_factory.mktemp("faults")
    for i in range(3):
        (root / f"p{i}.jpg").write_bytes(_jpeg(i))
    whole = _jpeg(9)
    (root / "truncated.jpg").write_bytes(whole[:len(whole) // 2])  # the header reads fine, decoding fails
    model, processor = tiny("llava")
    model.save_pretrained(root / "llava")
    processor.save_pretrained(root / "llava")
    return root


def _row(i: int, **change) -> dict:
    return {"id": f"r{i}", "prompt": "<image>\nWhat is in the image?", "images": [f"p{i % 3}.jpg"],
            "chosen": f"It is picture {i % 3}.", "rejected": "It is a red bus.", **change}


def _data(workdir: Path, name: str, rows: list) -> str:
    path = workdir / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def _raw(workdir: Path, train_file: str, out: str, **sections) -> dict:
    raw = {"model": {"name_or_path": str(workdir / "llava"), "dtype": "float32"},
           "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
           "data": {"train": train_file, "max_length": 64},
           "loss": {"name": "dpo", "params": {"beta": 0.5}},
           "train": {"output_dir": str(workdir / out), "learning_rate": 1e-3, "num_train_epochs": 1,
                     "per_device_train_batch_size": 2, "logging_steps": 1, "save_strategy": "no", "seed": 0,
                     "use_cpu": True, "disable_tqdm": True}}
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return raw


def _run(raw: dict) -> dict:
    return train(config_from_dict(raw).validate())


# ---- bad records: before step 1, or skipped once -------------------------------------------------------------

def test_truncated_jpeg_as_the_48th_record_fails_before_training(workdir):
    rows = [_row(i) for i in range(47)] + [_row(47, images=["truncated.jpg"])]
    raw = _raw(workdir, _data(workdir, "cut48.jsonl", rows), "out_cut48", train={"save_strategy": "steps",
                                                                                 "save_steps": 1})
    with pytest.raises(ValueError) as info:
        _run(raw)
    message = str(info.value)
    assert "1 of 48 records cannot be trained on" in message and "record 47 (id='r47'): corrupt_image" in message
    assert "truncated.jpg" in message and "data.on_bad_record: skip" in message
    out = Path(raw["train"]["output_dir"])
    assert not list(out.glob("*checkpoint-*")) and not (out / "trainer_state.json").exists()  # no step ran


def test_skip_mode_with_batch_size_one_drops_each_bad_record_once(workdir, caplog):
    long_prompt = "<image>\n" + "describe every single detail " * 12
    rows = [_row(i) for i in range(6)] + [
        _row(6, rejected=...),  # missing_field (loader)
        _row(7, chosen="\x00\x00"),  # empty_response (loader)
        _row(8, images=["truncated.jpg"]),  # corrupt_image (pre-flight: only decoding finds it)
        _row(9, prompt=long_prompt),  # prompt_too_long (pre-flight)
    ]
    rows = [{k: v for k, v in r.items() if v is not ...} for r in rows]
    raw = _raw(workdir, _data(workdir, "skip.jsonl", rows), "out_skip",
               data={"on_bad_record": "skip"}, reference={"precompute": True, "batch_size": 1},
               train={"per_device_train_batch_size": 1, "num_train_epochs": 2})
    with caplog.at_level(logging.INFO):
        summary = _run(raw)
    # 4 bad records count as 4, whatever the epochs and the reference pass; every batch holds one good pair
    assert summary["skipped_records"] == {"missing_field": 1, "empty_response": 1, "corrupt_image": 1,
                                          "prompt_too_long": 1}
    assert summary["global_step"] == 12
    state = json.loads((Path(raw["train"]["output_dir"]) / "trainer_state.json").read_text())
    assert {e["data/skipped_records"] for e in state["log_history"] if "data/skipped_records" in e} == {4.0}
    for record in ("record 8 (id='r8')", "record 9 (id='r9')"):
        lines = [r for r in caplog.records if record in r.getMessage() and "skipping" in r.getMessage()]
        assert len(lines) == 1, [r.getMessage() for r in lines]
    # the pre-flight pass dropped them all: the collator never met a bad record (the trainer logs its skips)
    assert not [r for r in caplog.records if r.name == "mm_unidpo.train.trainer" and "skipping" in r.getMessage()]


def test_empty_or_all_bad_data_says_so(workdir):
    raw = _raw(workdir, _data(workdir, "empty.jsonl", []), "out_empty")
    with pytest.raises(EmptyDataError, match=r"data.train: .*empty.jsonl: no preference records \(the source is empty\)"):
        _run(raw)
    raw = _raw(workdir, _data(workdir, "allbad.jsonl", [_row(0, images=["truncated.jpg"])] * 2), "out_allbad",
               data={"on_bad_record": "skip"})
    with pytest.raises(EmptyDataError, match=r"allbad.jsonl: no usable preference records: the pre-flight check "
                                             r"dropped all 2 that loaded \(skipped 2 bad records \(corrupt_image: 2\)\)"):
        _run(raw)


# ---- configs and models, at load time ------------------------------------------------------------------------

CONFIG_KINDS = [
    ("string for a number", "--train.learning_rate='0.001'", "train.learning_rate must be a number, got '0.001'"),
    ("learning rate 0", "--train.learning_rate=0", "train.learning_rate must be > 0"),
    ("batch size 0", "--train.per_device_train_batch_size=0", "train.per_device_train_batch_size must be >= 1"),
    ("accumulation 0", "--train.gradient_accumulation_steps=0", "train.gradient_accumulation_steps must be >= 1"),
    ("float batch size", "--train.per_device_train_batch_size=2.5", "must be an integer, got 2.5"),
    ("dropout 1", "--lora.dropout=1.0", "lora.dropout must be in [0, 1)"),
    ("rank 0", "--lora.r=0", "lora.r must be >= 1"),
    ("string rank", "--lora.r=eight", "lora.r must be an integer, got 'eight'"),
    ("dtype name", "--model.dtype=bf16", "model.dtype must be one of auto, float32, float16, bfloat16"),
    ("bool as text", "--model.load_in_4bit=yes", "model.load_in_4bit must be true/false"),
    ("max_length 1", "--data.max_length=1", "data.max_length must be >= 2"),
    ("unknown format", "--data.format=csv", "data.format 'csv' is not a data format"),
    ("unknown family", "--model.family=gpt", "model.family 'gpt' is not a model family"),
    ("loss parameter as text", "--loss.params.label_smoothing=abc", "loss.params.label_smoothing must be a number"),
    ("infinite parameter", "--loss.params.label_smoothing=.inf", "loss.params.label_smoothing must be finite"),
    ("parameter beyond float32", "--loss.params.beta=1e39", "loss.params.beta must be finite (within float32"),
]


@pytest.mark.parametrize("kind,override,text", CONFIG_KINDS, ids=[k[0] for k in CONFIG_KINDS])
def test_config_values_are_checked_at_load_time(workdir, kind, override, text):
    path = workdir / "base.yaml"
    path.write_text(yaml.safe_dump(_raw(workdir, "train.jsonl", "out_cfg")))
    with pytest.raises(ConfigError) as info:
        load_config(path, [override])
    assert str(info.value).startswith(f"{path}: ") and text in str(info.value), str(info.value)


def test_valid_values_still_load(workdir):
    path = workdir / "ok.yaml"
    path.write_text(yaml.safe_dump(_raw(workdir, "train.jsonl", "out_ok")))
    config = load_config(path, ["--train.resume_from_checkpoint=true", "--train.warmup_steps=0.1", "--lora.r=8",
                                "--data.limit=10", "--loss.name=unidpo", "--loss.params.beta=2"])
    assert config.train["resume_from_checkpoint"] is True and config.lora.r == 8


@pytest.mark.parametrize("objective", ["dpo", "ipo", "hinge", "rdpo", "simpo", "cpo", "orpo", "unidpo", "adadpo"])
@pytest.mark.parametrize("beta", ["-0.1", "0", ".inf", ".nan"])
def test_beta_must_be_positive_and_finite_for_every_objective(workdir, objective, beta):
    path = workdir / "beta.yaml"
    raw = _raw(workdir, "train.jsonl", "out_beta", loss={"name": objective, "params": {}})
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"loss.params.beta must be (> 0|finite)"):
        load_config(path, [f"--loss.params.beta={beta}"])


def test_yaml_syntax_error_names_the_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("model:\n  name_or_path: x\n  dtype: [float32\ntrain:\n  output_dir: y\n")
    with pytest.raises(ConfigError, match=rf"{path}: YAML syntax error at line \d+, column \d+"):
        load_config(path)


def test_missing_local_model_and_unreachable_hub_id_name_the_model(workdir, monkeypatch):
    from huggingface_hub import constants

    from mm_unidpo.models.loading import ModelLoadError, load_pretrained

    raw = _raw(workdir, _data(workdir, "one.jsonl", [_row(0)]), "out_model",
               model={"name_or_path": str(workdir / "no-such-checkpoint")})
    with pytest.raises(ModelLoadError, match=r"no-such-checkpoint' is a local path that does not exist: give the folder"):
        _run(raw)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError, match=r"cannot load the model 'someone/no-such-model' from the hub .*"
                                             r"`hf download someone/no-such-model`"):
        load_pretrained("someone/no-such-model")


def test_cli_prints_one_message_and_exits_nonzero(workdir, capsys):
    from mm_unidpo.cli import main

    bad = workdir / "cli.yaml"
    bad.write_text(yaml.safe_dump(_raw(workdir, "train.jsonl", "out_cli", lora={"dropout": 1.5})))
    assert main(["train", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"mm-unidpo train: error: {bad}: lora.dropout must be in [0, 1), got 1.5\n")
    assert "Traceback" not in err and "--debug" in err
    assert main(["train", str(workdir / "nope.yaml")]) == 1
    assert "config file" in capsys.readouterr().err
    with pytest.raises(ConfigError):  # --debug: the exception itself, with its traceback
        main(["train", str(bad), "--debug"])


# ---- the reference cache trusts nothing on disk --------------------------------------------------------------

def _records(n: int):
    from mm_unidpo.data import PreferenceRecord

    return [PreferenceRecord(f"Question {i}?", f"Answer {i}.", f"Wrong {i}.", id=f"q{i}", index=i) for i in range(n)]


def _values(records) -> dict[str, torch.Tensor]:
    """Stand-in reference values that depend on each record's content only."""
    seeds = [float(r.chosen.split()[-1].rstrip(".")) for r in records]
    return {"chosen": -torch.tensor(seeds) - 1, "rejected": -torch.tensor(seeds) * 2 - 3,
            "chosen_lengths": torch.tensor([3] * len(records)), "rejected_lengths": torch.tensor([4] * len(records))}


def _flip_a_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01  # inside the last tensor's bytes
    path.write_bytes(bytes(data))


def _swap_chosen_rejected(path: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        metadata, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    tensors["chosen"], tensors["rejected"] = tensors["rejected"], tensors["chosen"]
    save_file(tensors, str(path), metadata=metadata)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-40])


def _wrong_length(path: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        metadata, tensors = f.metadata(), {k: f.get_tensor(k)[:-1] for k in f.keys()}
    save_file(tensors, str(path), metadata=metadata)


@pytest.mark.parametrize("fault,text", [(_flip_a_bit, "fails its checksum"), (_swap_chosen_rejected, "fails its checksum"),
                                        (_truncate, "cannot be read"), (_wrong_length, "has 5 rows where it was written with 6")],
                         ids=["bit flip", "swapped chosen/rejected", "truncated", "wrong length"])
def test_reference_cache_faults_are_named_and_recomputed(tmp_path, caplog, fault, text):
    from mm_unidpo.data import record_digests
    from mm_unidpo.train.reference import load_or_compute

    records = _records(6)
    digests = record_digests(records)
    calls = []

    def compute():
        calls.append(1)
        return _values(records)

    first, hit = load_or_compute(tmp_path, "k", compute, row_keys=digests)
    assert not hit
    (path,) = tmp_path.glob("ref-k.safetensors")
    fault(path)
    with caplog.at_level(logging.WARNING, logger="mm_unidpo.train.reference"):
        again, hit = load_or_compute(tmp_path, "k", compute, row_keys=digests)
    assert not hit and len(calls) == 2 and f"reference cache {path} {text}" in caplog.text, caplog.text
    for key in first:
        torch.testing.assert_close(again[key], first[key], rtol=0, atol=0)
    assert load_or_compute(tmp_path, "k", compute, row_keys=digests)[1]  # rewritten: a hit again


def test_reference_cache_rows_follow_their_records(tmp_path, caplog):
    from mm_unidpo.data import record_digests
    from mm_unidpo.train.reference import data_fingerprint, load_or_compute

    records = _records(6)
    load_or_compute(tmp_path, "k", lambda: _values(records), row_keys=record_digests(records))
    reordered = [records[i] for i in (3, 0, 5, 1, 4, 2)]
    assert data_fingerprint(reordered) == data_fingerprint(records)  # the key does not depend on the order
    values, hit = load_or_compute(tmp_path, "k", lambda: pytest.fail("recomputed"), row_keys=record_digests(reordered))
    assert hit
    for key, expected in _values(reordered).items():
        torch.testing.assert_close(values[key], expected, rtol=0, atol=0)  # aligned by content, not position
    other = _records(7)  # a record the cache has no row for
    with caplog.at_level(logging.WARNING, logger="mm_unidpo.train.reference"):
        values, hit = load_or_compute(tmp_path, "k", lambda: _values(other), row_keys=record_digests(other))
    assert not hit and "has no row for 1 of the 7 records (first: position 6)" in caplog.text


# ---- a full disk during a checkpoint ---------------------------------------------------------------------------

def test_disk_full_during_a_checkpoint_names_the_directory_and_removes_it(workdir, monkeypatch):
    from transformers.trainer_utils import get_last_checkpoint

    from mm_unidpo.train.checkpoints import CheckpointWriteError
    from mm_unidpo.train.trainer import PreferenceTrainer

    raw = _raw(workdir, _data(workdir, "disk.jsonl", [_row(i) for i in range(8)]), "out_disk",
               train={"max_steps": 4, "save_strategy": "steps", "save_steps": 2})
    real_save = PreferenceTrainer._save_rng_state
    calls = {"n": 0}

    def full_on_second_save(self, output_dir):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, output_dir)

    monkeypatch.setattr(PreferenceTrainer, "_save_rng_state", full_on_second_save)
    with pytest.raises(CheckpointWriteError) as info:
        _run(raw)
    out = raw["train"]["output_dir"]
    staging = os.path.join(out, "tmp-checkpoint-4")
    assert f"could not write checkpoint-4 to {staging}: no space left on the device" in str(info.value)
    assert "the partial directory was removed" in str(info.value) and info.value.errno == errno.ENOSPC
    assert not os.path.exists(staging) and get_last_checkpoint(out) == os.path.join(out, "checkpoint-2")


# ---- .bin weights: tensors only -----------------------------------------------------------------------------

class _Payload:
    """A pickle that creates a file when unpickled: what a hostile .bin could run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


@pytest.fixture(scope="module")
def bin_checkpoints(tmp_path_factory):
    from mm_unidpo.testing import tiny

    root = tmp_path_factory.mktemp("bin")
    model, tokenizer = tiny("causal_lm")
    for name in ("clean", "hostile"):
        (root / name).mkdir()
        model.config.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    torch.save(model.state_dict(), root / "clean" / "pytorch_model.bin")
    torch.save({"training": "args"}, root / "clean" / "training_args.bin")  # pickled state: neither read nor copied
    torch.save({**model.state_dict(), "extra": _Payload(root / "pwned")}, root / "hostile" / "pytorch_model.bin")
    return root, model.eval()


def test_convert_writes_safetensors_that_load_to_the_same_model(bin_checkpoints, tmp_path):
    from transformers import AutoModelForCausalLM

    from mm_unidpo.cli import main

    root, model = bin_checkpoints
    assert main(["convert", str(root / "clean"), "--out", str(tmp_path / "st")]) == 0
    assert (tmp_path / "st" / "model.safetensors").is_file() and not list((tmp_path / "st").glob("*.bin"))
    assert (tmp_path / "st" / "tokenizer_config.json").is_file()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "st", use_safetensors=True).eval()
    ids = torch.tensor([[1, 5, 9, 13]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0)


def test_a_pickle_payload_in_a_bin_is_refused_and_never_runs(bin_checkpoints, tmp_path, capsys):
    from mm_unidpo.cli import main
    from mm_unidpo.models.loading import ModelLoadError, load_pretrained

    root, model = bin_checkpoints
    assert main(["convert", str(root / "hostile"), "--out", str(tmp_path / "st")]) == 1
    err = capsys.readouterr().err
    assert f"{root / 'hostile' / 'pytorch_model.bin'}: refused: the file holds Python objects beyond tensors" in err
    with pytest.raises(ModelLoadError, match="refused to load PyTorch .bin weights that hold more than tensors"):
        load_pretrained(str(root / "hostile"), allow_bin_weights=True, dtype="float32")
    assert not (root / "pwned").exists()
    # the safe default: .bin weights are not even considered, and the error says what to do
    with pytest.raises(ModelLoadError, match=r"mm-unidpo convert .* or set model.allow_bin_weights: true"):
        load_pretrained(str(root / "clean"), dtype="float32")
    loaded, _ = load_pretrained(str(root / "clean"), allow_bin_weights=True, dtype="float32")
    torch.testing.assert_close(loaded.lm_head.weight, model.lm_head.weight, rtol=0, atol=0)
