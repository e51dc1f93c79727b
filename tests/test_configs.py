"""The shipped configs: every training config loads and validates (loss parameters against the
objective, TrainingArguments by construction), the official ones carry the release's numbers, the
accelerate configs load with accelerate's own loader, the train scripts' overrides are valid, and the
`base:` include mechanism of `load_config` works."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from mm_unidpo.losses import LOSSES, PairLogps, preference_loss
from mm_unidpo.models import FAMILIES
from mm_unidpo.train.config import _hardware_dtype, load_config, model_dtype, training_arguments

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
TRAINING_CONFIGS = sorted(p for p in CONFIGS.rglob("*.yaml") if "accelerate" not in p.relative_to(CONFIGS).parts)
ACCELERATE_CONFIGS = sorted((CONFIGS / "accelerate").glob("*.yaml"))
JOBS = sorted(p.stem for p in CONFIGS.glob("*.yaml") if p.stem != "minimal_cpu")  # real-model jobs
SCRIPTS = sorted((ROOT / "scripts").glob("train_*.sh"))


def _id(path: Path) -> str:
    return str(path.relative_to(CONFIGS))


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _pair(n: int = 3) -> PairLogps:
    g = torch.Generator().manual_seed(0)
    logps = [-torch.rand(n, generator=g) * 20 - 1 for _ in range(4)]
    return PairLogps(
        policy_chosen=logps[0],
        policy_rejected=logps[1],
        chosen_lengths=torch.full((n,), 10),
        rejected_lengths=torch.full((n,), 12),
        reference_chosen=logps[2],
        reference_rejected=logps[3],
        score_chosen=torch.tensor([8.0, 3.0, 9.5]),
        score_rejected=torch.tensor([2.0, 3.5, 1.0]),
    )


def test_configs_are_shipped():
    assert {
        "llava15_7b_qlora_unidpo_rlaifv",
        "qwen2vl_7b_qlora_unidpo",
        "qwen2vl_2b_unidpo_official",
        "qwen25math_7b_unidpo_official",
        "llama3_8b_instruct_unidpo",
    } <= set(JOBS)
    for job in JOBS:  # the real-model jobs name their family, so no config download is needed to start
        assert load_config(CONFIGS / f"{job}.yaml").model.family in FAMILIES
        assert (ROOT / "scripts" / f"train_{job}.sh").is_file(), f"no script for {job}"
    for job in JOBS:  # a DPO, an AdaDPO and a SimPO baseline for every job
        for variant in ("dpo", "adadpo", "simpo"):
            assert (CONFIGS / "baselines" / f"{job}_{variant}.yaml").is_file(), f"{job}_{variant}"
    assert {p.stem for p in ACCELERATE_CONFIGS} == {"ddp", "fsdp", "zero2", "zero3"}


@pytest.mark.parametrize("path", TRAINING_CONFIGS, ids=_id)
def test_training_config_validates(path, tmp_path):
    # The demo's configs leave the paths it writes at run time empty; fill them as the demo does.
    overrides = (
        [
            f"--model.name_or_path={tmp_path}/sft",
            f"--data.train={tmp_path}/prefs.jsonl",
            f"--train.output_dir={tmp_path}/out",
        ]
        if "demo" in path.relative_to(CONFIGS).parts
        else []
    )
    config = load_config(path, overrides)  # schema, unknown keys, loss parameters, TrainingArguments fields
    # YAML 1.1 reads "2e-5" (no dot) as a string: every number must have been written so it parses as one.
    for section, values in (("loss.params", config.loss.params), ("train", config.train)):
        for key, value in values.items():
            assert not (isinstance(value, str) and _is_number(value)), f"{section}.{key}: {value!r} is a string"
    assert config.model.family is None or config.model.family in FAMILIES
    assert config.model.dtype in (None, "bfloat16", "float16", "float32")  # None: from the hardware
    # Parameter values must work too: run the objective once on a random batch.
    out = preference_loss(config.loss.name, _pair(), **config.loss.params)
    assert torch.isfinite(out.loss)
    if config.model.load_in_4bit and "demo" not in path.relative_to(CONFIGS).parts:
        assert config.train.get("gradient_checkpointing"), "the real-model QLoRA configs checkpoint activations"
    if not LOSSES[config.loss.name].needs_reference:
        assert not config.reference.precompute, "a reference-free objective needs no reference cache"
    # TrainingArguments construct on CPU: bf16 and paged / 8-bit optimizers are accepted here and only
    # exercised (autocast, bitsandbytes optimizer) once training starts — not testable without a GPU.
    config.train.update(output_dir=str(tmp_path / "out"), use_cpu=True)
    args = training_arguments(config)
    assert args.per_device_train_batch_size >= 1 and args.learning_rate > 0
    assert args.bf16 == (model_dtype(config.model) == "bfloat16")


def test_official_multimodal_settings():
    config = load_config(CONFIGS / "qwen2vl_2b_unidpo_official.yaml")
    assert config.model.name_or_path.startswith("Qwen/Qwen2-VL-2B") and config.model.family == "qwen2_vl"
    assert not config.lora.enabled and not config.model.load_in_4bit  # the official run is full FT
    assert config.loss.name == "unidpo"
    assert config.loss.params == {
        "beta": 2.0,
        "eta": 0.7,
        "tau_ref": 2.0,
        "gamma": 3.0,
        "nll_weight": 0.001,
        "tau_good": 2.5,
    }
    assert config.train["learning_rate"] == 6e-6 and config.train["num_train_epochs"] == 1


def test_official_math_settings():
    config = load_config(CONFIGS / "qwen25math_7b_unidpo_official.yaml")
    assert config.model.name_or_path == "Qwen/Qwen2.5-Math-7B" and config.model.family == "causal_lm"
    assert config.loss.name == "unidpo"
    assert config.loss.params == {
        "beta": 2.0,
        "eta": 0.7,
        "tau_ref": 2.0,
        "gamma": 3.0,
        "nll_weight": 0.2,
        "tau_good": 8.0,
    }
    assert config.train["learning_rate"] == 1e-6 and config.train["num_train_epochs"] == 2


def test_text_settings():
    params = load_config(CONFIGS / "llama3_8b_instruct_unidpo.yaml").loss.params
    assert (params["eta"], params["gamma"], params["nll_weight"], params["tau_good"]) == (0.7, 3.0, 0.001, 3.2)
    assert 2.0 <= params["beta"] <= 10.0 and 0.8 <= params["tau_ref"] <= 1.0


@pytest.mark.parametrize("path", sorted((CONFIGS / "baselines").glob("*.yaml")), ids=_id)
def test_baseline_changes_only_the_objective_and_run(path):
    job = next(j for j in JOBS if path.stem.startswith(j + "_"))
    base, config = load_config(CONFIGS / f"{job}.yaml"), load_config(path)
    assert config.loss.name == path.stem.rsplit("_", 1)[1]
    assert config.model == base.model and config.lora == base.lora and config.data == base.data
    assert config.train["output_dir"] != base.train["output_dir"]
    same = {k for k in base.train if k not in ("output_dir", "learning_rate")}
    assert {k: config.train[k] for k in same} == {k: base.train[k] for k in same}


@pytest.mark.parametrize("path", ACCELERATE_CONFIGS, ids=_id)
def test_accelerate_config_loads(path):
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import launch_command_parser

    config = load_config_from_file(str(path))
    expected = {"ddp": "MULTI_GPU", "fsdp": "FSDP", "zero2": "DEEPSPEED", "zero3": "DEEPSPEED"}[path.stem]
    assert config.distributed_type.value == expected and config.mixed_precision == "bf16"
    # accelerate launch copies these sections into its arguments without checking the names: check them.
    options = {action.dest for action in launch_command_parser()._actions}
    for key in [*config.deepspeed_config, *config.fsdp_config]:
        assert key in options, f"{path.name}: {key} is not an accelerate launch option"
    if path.stem == "fsdp":
        assert config.fsdp_config["fsdp_use_orig_params"] is True
        assert config.fsdp_config["fsdp_sharding_strategy"] == "FULL_SHARD"
        assert config.fsdp_config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    if path.stem.startswith("zero"):
        assert config.deepspeed_config["zero_stage"] == int(path.stem[-1])
    if path.stem == "zero3":
        assert config.deepspeed_config["zero3_init_flag"] is True


@pytest.mark.parametrize("num_gpus", ["1", "4"])
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_train_script_command_is_valid(script, num_gpus):
    env = {**os.environ, "DRY_RUN": "1", "NUM_GPUS": num_gpus}
    line = subprocess.run(
        ["bash", str(script), "--data.limit=8"], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    start = line.index("train") + 1
    config, overrides = line[start], line[start + 1 :]
    assert overrides[-1] == "--data.limit=8"
    loaded = load_config(ROOT / config, overrides)
    if num_gpus == "1":
        assert loaded.model.load_in_4bit and loaded.lora.enabled  # one consumer GPU: QLoRA
    else:
        assert "--config_file" in line and (ROOT / line[line.index("--config_file") + 1]).is_file()


# ---------------------------------------------------------------------------------- base: includes


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


BASE = {
    "model": {"name_or_path": "m", "family": "causal_lm", "dtype": "float32"},
    "data": {"train": "d.jsonl", "max_length": 512},
    "loss": {"name": "unidpo", "params": {"beta": 2.0, "eta": 0.7, "gamma": 3.0}},
    "train": {"output_dir": "runs/a", "learning_rate": 1e-6, "num_train_epochs": 1},
}


def test_base_merges_recursively(tmp_path):
    (tmp_path / "sub").mkdir()
    _write(tmp_path / "base.yaml", BASE)
    child = _write(
        tmp_path / "sub" / "child.yaml",
        {
            "base": "../base.yaml",
            "data": {"max_length": 1024},
            "loss": {"params": {"beta": 5.0}},
            "train": {"output_dir": "runs/b"},
        },
    )
    config = load_config(child, ["--train.learning_rate=2.0e-6"])  # overrides come last
    assert config.model.name_or_path == "m" and config.data.train == "d.jsonl" and config.data.max_length == 1024
    assert config.loss.name == "unidpo" and config.loss.params == {"beta": 5.0, "eta": 0.7, "gamma": 3.0}
    assert config.train == {"output_dir": "runs/b", "learning_rate": 2e-6, "num_train_epochs": 1}


def test_base_loss_of_another_objective_is_replaced(tmp_path):
    _write(tmp_path / "base.yaml", BASE)
    child = _write(tmp_path / "dpo.yaml", {"base": "base.yaml", "loss": {"name": "dpo", "params": {"beta": 0.1}}})
    config = load_config(child)  # Uni-DPO's eta / gamma must not reach DPO (which would reject them)
    assert config.loss.name == "dpo" and config.loss.params == {"beta": 0.1}


def test_base_list_chain_and_errors(tmp_path):
    _write(tmp_path / "a.yaml", BASE)
    _write(tmp_path / "b.yaml", {"train": {"num_train_epochs": 3}})
    _write(tmp_path / "c.yaml", {"base": ["a.yaml", "b.yaml"], "train": {"output_dir": "runs/c"}})
    grandchild = _write(tmp_path / "d.yaml", {"base": "c.yaml", "data": {"limit": 4}})
    config = load_config(grandchild)
    assert config.train["num_train_epochs"] == 3 and config.train["output_dir"] == "runs/c"
    assert config.data.limit == 4 and config.data.max_length == 512

    _write(tmp_path / "x.yaml", {"base": "y.yaml"})
    _write(tmp_path / "y.yaml", {"base": "x.yaml"})
    with pytest.raises(ValueError, match="cycle"):
        load_config(tmp_path / "x.yaml")
    with pytest.raises(FileNotFoundError):
        load_config(_write(tmp_path / "missing.yaml", {"base": "nope.yaml"}))
    with pytest.raises(ValueError, match="loss.params"):  # validation still applies after merging
        load_config(_write(tmp_path / "bad.yaml", {"base": "a.yaml", "loss": {"params": {"margin": 1.0}}}))


@pytest.mark.slow
def test_bench_qlora_memory_cpu_smoke(capsys):
    """The benchmark's CPU smoke run: the shipped QLoRA config, 4-bit tiny model, one timed Uni-DPO step."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("bench_qlora_memory", ROOT / "scripts" / "bench_qlora_memory.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--tiny", "--model", "qwen2vl-7b", "--max-length", "256"]) == 0
    out = capsys.readouterr().out
    assert "CPU SMOKE RUN" in out
    report = json.loads(out.strip().splitlines()[-1])
    (result,) = report["results"]
    assert report["mode"] == "cpu_smoke" and result["load_in_4bit"] and result["loss"] == "unidpo"
    assert result["input_shape"][0] == 1 and result["step_time_s"] > 0 and result["peak_rss_gb"] > 0


def test_train_script_refuses_more_gpus_than_the_global_batch():
    env = {**os.environ, "DRY_RUN": "1", "NUM_GPUS": "256"}
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "train_qwen2vl_2b_unidpo_official.sh")], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 2 and "global batch 128 < 1 x 256 GPUs" in proc.stderr and not proc.stdout


def test_readme_override_of_the_objective_on_a_shipped_config():
    """README: `mm-unidpo train CONFIG.yaml --loss.name=adadpo --loss.params.beta=0.1` on a shipped Uni-DPO
    config: the other objective's parameters (eta, gamma, ...) go with it, the given ones apply."""
    shipped = CONFIGS / "llava15_7b_qlora_unidpo_rlaifv.yaml"
    config = load_config(shipped, ["--loss.name=adadpo", "--loss.params.beta=0.1"])
    assert config.loss.name == "adadpo" and config.loss.params == {"beta": 0.1}
    config.validate()
    same = load_config(shipped, ["--loss.name=unidpo", "--loss.params.beta=0.5"])
    assert same.loss.params["beta"] == 0.5 and "eta" in same.loss.params  # the same objective keeps its own


def test_readme_pairs_train_on_the_shipped_config_that_pins_a_format(tmp_path):
    """README "Make your own preference data": `mm-unidpo pairs` writes our format; the shipped LLaVA config
    pins data.format: rlaif_v. A new data.train (override or child config) detects its own format; a format
    given with it stays, and a record that does not fit a forced format says which and where it was set."""
    from mm_unidpo.data import BadRecordError, PreferenceRecord, save_preference_data
    from mm_unidpo.train.run import _load_data

    shipped = CONFIGS / "llava15_7b_qlora_unidpo_rlaifv.yaml"
    assert load_config(shipped).data.format == "rlaif_v"
    pairs = save_preference_data([PreferenceRecord("Describe.", "A cat.", "A dog.", id="p0")], tmp_path / "p.jsonl")
    config = load_config(shipped, [f"--data.train={pairs}"])
    assert config.data.format is None and _load_data(config, str(pairs), "train", "data.train").format == "unidpo"
    child = tmp_path / "child.yaml"
    child.write_text(yaml.safe_dump({"base": str(shipped), "data": {"train": str(pairs)}}))
    assert load_config(child).data.format is None
    child.write_text(
        yaml.safe_dump(
            {"base": str(shipped), "data": {"train": str(pairs), "format": "rlaif_v", "on_bad_record": "error"}}
        )
    )
    forced = load_config(child)
    with pytest.raises(
        BadRecordError,
        match=rf"record 0 \(id='p0'\): missing_field: .*question.*read as format "
        rf"'rlaif_v', forced by {child}, key data.format",
    ):
        _load_data(forced, str(pairs), "train", "data.train")
    override = load_config(shipped, [f"--data.train={pairs}", "--data.format=rlaif_v", "--data.on_bad_record=error"])
    with pytest.raises(BadRecordError, match="forced by the override --data.format=rlaif_v"):
        _load_data(override, str(pairs), "train", "data.train")
    config = load_config(shipped, [f"--data.train={pairs}", "--data.format=rlaif_v", "--data.on_bad_record=skip"])
    with pytest.raises(ValueError, match="all 1 records were bad .*forced by the override --data.format=rlaif_v"):
        _load_data(config, str(pairs), "train", "data.train")
    with_base = load_config(child, ["--data.limit=1"])  # the file that set it, not its base
    assert with_base.origins["data.format"] == f"{child}, key data.format"
    assert load_config(shipped).origins["data.format"] == f"{shipped}, key data.format"


@pytest.mark.filterwarnings("error::FutureWarning", "error:.*pin_memory:UserWarning")  # none the user can act on
def test_minimal_cpu_config_trains_where_the_user_is(tmp_path, caplog):
    """configs/minimal_cpu.yaml sets nothing machine-specific (no use_cpu, bf16 or dtype): on a CPU-only
    machine the dtype is float32 (logged) and it trains; on a GPU it would be bfloat16."""
    from mm_unidpo.data import PreferenceRecord, save_preference_data
    from mm_unidpo.testing import tiny
    from mm_unidpo.train.run import train

    raw = yaml.safe_load((CONFIGS / "minimal_cpu.yaml").read_text())
    assert "use_cpu" not in raw["train"] and "bf16" not in raw["train"] and "dtype" not in raw["model"]
    model, tokenizer = tiny("causal_lm")
    model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    pairs = [PreferenceRecord(f"Question {k}?", f"Answer {k}.", "No.", id=str(k)) for k in range(2)]
    save_preference_data(pairs, tmp_path / "pairs.jsonl")
    config = load_config(
        CONFIGS / "minimal_cpu.yaml",
        [
            f"--model.name_or_path={tmp_path / 'm'}",
            f"--data.train={tmp_path / 'pairs.jsonl'}",
            f"--train.output_dir={tmp_path / 'out'}",
            "--train.max_steps=1",
            "--train.disable_tqdm=true",
        ],
    )
    _hardware_dtype.cache_clear()
    with caplog.at_level("INFO", logger="mm_unidpo.train.config"):
        args = training_arguments(config)
    expected = "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float32"
    assert args.bf16 == (expected == "bfloat16") and f"model.dtype not set: {expected}" in caplog.text
    if not torch.cuda.is_available():
        assert args.device.type == "cpu"
        summary = train(config)
        assert summary["global_step"] == 1 and summary["train_loss"] == summary["train_loss"]  # finite, not NaN
