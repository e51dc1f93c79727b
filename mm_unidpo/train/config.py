"""Training configuration: dataclasses read from YAML, with `--section.key=value` overrides.

    model:  what to load (hub id or path), dtype, 4-bit
    lora:   LoRA / QLoRA adapter settings (disable for full fine-tuning)
    data:   the preference data and how to read it
    loss:   an objective of the loss core and its parameters (image terms included)
    reference: live (adapter disabled, frozen copy) or precomputed and cached; TR-DPO sync
    train:  any `transformers.TrainingArguments` field

Every key is checked: an unknown key or a bad value is an error that names it, at load time.
A top-level `base: other.yaml` builds on another config (merged recursively; see `read_config`).

A `data.format` belongs to the file beside it: a config or override that names another `data.train`
without a `data.format` detects the new file's format (so a shipped config that pins `rlaif_v` trains
the `unidpo` pairs of `mm-unidpo pairs`), as a new `loss.name` drops the old objective's parameters.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mm_unidpo.yaml_config import ConfigError, from_dict, load_yaml, read_yaml_file

from .checks import check_config

logger = logging.getLogger(__name__)

__all__ = [
    "CONFIG_NAME",
    "ConfigError",
    "DataConfig",
    "LoraSettings",
    "LossConfig",
    "ModelConfig",
    "ReferenceConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "key_origin",
    "load_config",
    "merge_configs",
    "model_dtype",
    "read_config",
    "save_run_config",
    "training_arguments",
]


@dataclass
class ModelConfig:
    name_or_path: str = ""
    family: str | None = None  # detected from the checkpoint's config when None
    dtype: str | None = None  # None: bfloat16 on a GPU that has it, else float32 (`model_dtype`, logged)
    load_in_4bit: bool = False
    attn_implementation: str | None = "sdpa"
    trust_remote_code: bool = False
    revision: str | None = None
    # The shared-prefix fast path (models/packed.py); false = the plain two-row layout.
    shared_prefix: bool = True
    pack_pairs: bool = True  # a micro-batch's pairs back to back in one row; false = one pair per row
    max_tokens_per_row: int | None = None  # start a new packed row past this many tokens (None: one row)
    # scored tokens per LM-head chunk: "auto" (chunk x vocab ~ tokens x hidden), a number, or null (materialise)
    head_chunk_size: int | str | None = "auto"
    # Load PyTorch `.bin` weights where a checkpoint has no safetensors (the original LLaVA ones), with
    # torch.load(weights_only=True) only: tensors, never pickled code. `mm-unidpo convert` is the other way.
    allow_bin_weights: bool = False
    # DDPO (RLHF-V; CHiP's segment level): the tokens where chosen and rejected differ count this many times
    # in every log-prob sum (models/token_weights.py); null: off
    token_weight: float | None = None


@dataclass
class LoraSettings:
    enabled: bool = True
    r: int = 64
    alpha: int = 128
    dropout: float = 0.05
    # "all-linear": every linear layer of the language model (not the vision tower, projector or LM head);
    # or a list of module-name suffixes such as [q_proj, v_proj].
    target_modules: str | list[str] = "all-linear"
    train_projector: bool = False  # also train the multimodal projector (fully, as modules_to_save)


@dataclass
class DataConfig:
    train: str = ""
    eval: str | None = None
    format: str | None = None  # detected when None
    split: str = "train"
    eval_split: str | None = None
    image_root: str | None = None
    on_bad_record: str = "error"  # or "skip": counted and reported
    max_length: int = 2048
    limit: int | None = None
    # micro-batches of as many pairs as fit in this many packed tokens (data/batching.py), instead of
    # train.per_device_train_batch_size pairs
    max_tokens_per_batch: int | None = None
    unique_ids: bool = False  # records sharing an id: an error (default: a warning)
    # Encode every record once before training (train/preflight.py), so a bad one fails or is skipped
    # before step 1; verdicts are cached by record content (default: <output_dir>/preflight_cache).
    preflight: bool = True
    preflight_workers: int | None = None  # DataLoader worker processes; None: automatic
    preflight_cache_dir: str | None = None
    # the contrast image of the image-side terms (loss.params.image_term; data/corruption.py): a kind
    # (crop, noise, blank, shuffle) or {kind, seed, noise_step, crop_scale}
    corruption: str | dict[str, Any] | None = None


@dataclass
class LossConfig:
    # an objective (`mm-unidpo losses`) or a preset mixture (mpo); null: unidpo, or "mixture" with `mixture`
    name: str | None = None
    params: dict[str, Any] = field(default_factory=dict)  # next to a mixture: shared by its components
    mixture: list[dict[str, Any]] | None = None  # [{name: dpo, weight: 0.8, params: {...}}, ...]: a weighted sum

    def __post_init__(self) -> None:
        if self.name is None:
            self.name = "mixture" if self.mixture is not None else "unidpo"


@dataclass
class ReferenceConfig:
    precompute: bool = False  # compute reference log-probs once before training, cached on disk
    cache_dir: str | None = None  # default: <output_dir>/reference_cache
    batch_size: int = 4
    # TR-DPO (train/sync.py), TRL's names: every ref_model_sync_steps steps θ_ref ← α·θ + (1 − α)·θ_ref
    sync_ref_model: bool = False
    ref_model_mixup_alpha: float = 0.6
    ref_model_sync_steps: int = 512


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    train: dict[str, Any] = field(default_factory=dict)  # transformers.TrainingArguments fields
    # Where a key was set ("data.format" -> "configs/x.yaml, key data.format"), for messages; not a setting.
    origins: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    def validate(self) -> TrainConfig:
        """Check every value at load time (types, ranges, names, paths); a `ConfigError` names the key."""
        check_config(self)
        return self

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "origins"}


_SECTIONS = {
    "model": ModelConfig,
    "lora": LoraSettings,
    "data": DataConfig,
    "loss": LossConfig,
    "reference": ReferenceConfig,
}


def config_from_dict(raw: dict[str, Any], source: str = "config") -> TrainConfig:
    raw = dict(raw or {})
    unknown = sorted(set(raw) - set(_SECTIONS) - {"train"})
    if unknown:
        raise ConfigError(f"{source}: unknown section(s) {unknown}; sections are {sorted([*_SECTIONS, 'train'])}")
    # unknown keys and wrongly typed values name the file and the key (yaml_config.from_dict)
    sections: dict[str, Any] = {
        name: from_dict(cls, raw.get(name), source=source, section=name) for name, cls in _SECTIONS.items()
    }
    train = raw.get("train") or {}
    if not isinstance(train, dict):
        raise ConfigError(f"{source}: section 'train' must be a mapping")
    return TrainConfig(**sections, train=dict(train))


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `--a.b.c=value` overrides (value parsed as YAML) to the raw config mapping. An override that
    names another objective (`--loss.name=...`) starts its `loss` section afresh, as `base:` merging does:
    the config's parameters belong to its own objective (`--loss.params.*` overrides then apply). Likewise
    `--data.train=...` without `--data.format=...` drops the config's format (see the module doc)."""
    parsed = [_parse_override(item) for item in overrides]
    raw = copy.deepcopy(dict(raw))
    names = [value for keys, value, _ in parsed if keys == ["loss", "name"]]
    loss = raw.get("loss")
    if names and isinstance(loss, dict) and names[-1] != loss.get("name"):
        raw["loss"] = {}
    data = raw.get("data")
    given = {tuple(keys) for keys, _, _ in parsed}
    if isinstance(data, dict) and ("data", "train") in given and ("data", "format") not in given:
        data.pop("format", None)
    for keys, value, item in parsed:
        node = raw
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {key!r} is not a section")
        node[keys[-1]] = value
    return raw


def _parse_override(item: str) -> tuple[list[str], Any, str]:
    text = item[2:] if item.startswith("--") else item
    if "=" not in text:
        raise ConfigError(f"override {item!r} must look like --section.key=value")
    dotted, value = text.split("=", 1)
    try:
        return dotted.split("."), load_yaml(value), item
    except yaml.YAMLError as error:
        raise ConfigError(f"override {item!r}: the value is not valid YAML: {error}") from None


def merge_configs(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """`child` on top of `base`: mappings merge recursively, anything else (lists too) replaces.

    One exception keeps objectives apart: a child `loss` that names another objective replaces the
    base's `loss` whole, so e.g. Uni-DPO's `eta` never leaks into a DPO baseline's params. Another keeps
    formats with their files: a child `data` that names a `train` file but no `format` drops the base's.
    """
    out = dict(base)
    for key, value in child.items():
        old = out.get(key)
        if key == "data" and isinstance(old, dict) and isinstance(value, dict) and "train" in value:
            old = {k: v for k, v in old.items() if k != "format"}
        if (
            key == "loss"
            and isinstance(old, dict)
            and isinstance(value, dict)
            and value.get("name", old.get("name")) != old.get("name")
        ):
            out[key] = dict(value)
        elif isinstance(old, dict) and isinstance(value, dict):
            out[key] = _merge_nested(old, value)
        else:
            out[key] = value
    return out


def _merge_nested(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in child.items():
        old = out.get(key)
        out[key] = _merge_nested(old, value) if isinstance(old, dict) and isinstance(value, dict) else value
    return out


def read_config(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The raw mapping of a YAML config with its `base:` chain resolved.

    `base: other.yaml` (or a list of files, merged in order) names configs this one builds on; paths
    are relative to the file that names them. The bases are merged first (`merge_configs`), then this
    file's own keys on top.
    """
    path = Path(path).resolve()
    if path in _chain:
        raise ConfigError(f"config base cycle: {' -> '.join(str(p) for p in (*_chain, path))}")
    if not path.is_file():
        named = f" (the base of {_chain[-1]})" if _chain else ""
        raise FileNotFoundError(f"config file {path}{named} does not exist")
    raw = read_yaml_file(path)
    bases = raw.pop("base", None) or []
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: 'base' must be a file name or a list of file names")
    merged: dict[str, Any] = {}
    for name in bases:
        merged = merge_configs(merged, read_config(path.parent / name, (*_chain, path)))
    return merge_configs(merged, raw)


def key_origin(path: str | Path, dotted: str, overrides: list[str] | None = None) -> str | None:
    """Where the value of `dotted` (e.g. "data.format") in the config `path` + `overrides` was set: the
    last override naming it, else the file of the `base:` chain that set it last; None if none did."""
    keys = dotted.split(".")
    for item in reversed(overrides or []):
        if _parse_override(item)[0] == keys:
            return f"the override {item}"
    return _file_origin(Path(path).resolve(), keys)


def _file_origin(path: Path, keys: list[str]) -> str | None:
    raw = read_yaml_file(path)
    node: Any = raw
    for key in keys:
        node = node.get(key, None) if isinstance(node, dict) else None
    if node is not None:
        return f"{path}, key {'.'.join(keys)}"
    bases = raw.get("base") or []
    for name in reversed([bases] if isinstance(bases, str) else bases):
        found = _file_origin(path.parent / name, keys)
        if found:
            return found
    return None


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    raw = apply_overrides(read_config(path), overrides or [])
    config = config_from_dict(raw, source=str(path))
    if config.data.format not in (None, "auto"):
        config.origins["data.format"] = key_origin(path, "data.format", overrides) or str(path)
    try:
        return config.validate()
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


CONFIG_NAME = "mm_unidpo_config.yaml"


def save_run_config(config: dict[str, Any], directory: str | Path) -> None:
    """Write our config next to a saved adapter, so a checkpoint says how it was trained."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    with open(Path(directory) / CONFIG_NAME, "w", encoding="utf-8") as f:
        yaml.safe_dump(config, f, sort_keys=False)


def model_dtype(model: ModelConfig) -> str:
    """`model.dtype`, or where the config leaves it out the machine's: bfloat16 on a GPU that supports it,
    float32 elsewhere, so a config without `train.use_cpu` also runs on a CPU-only machine."""
    return model.dtype if model.dtype is not None else _hardware_dtype()


@functools.cache
def _hardware_dtype() -> str:
    import torch  # lazy: reading and checking a config needs no torch

    bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    dtype = "bfloat16" if bf16 else "float32"
    logger.info("model.dtype not set: %s (%s)", dtype, "a GPU with bfloat16" if bf16 else "no GPU with bfloat16")
    return dtype


def training_arguments(config: TrainConfig):
    """transformers.TrainingArguments from the `train` section, with defaults suited to preference data."""
    import torch
    from transformers import TrainingArguments

    accepted = set(inspect.signature(TrainingArguments.__init__).parameters)
    # transformers 5 renamed gradient_checkpointing_kwargs; use whichever this version has.
    checkpointing = (
        "activation_checkpointing_kwargs"
        if "activation_checkpointing_kwargs" in accepted
        else "gradient_checkpointing_kwargs"
    )
    args: dict[str, Any] = {
        "remove_unused_columns": False,
        "logging_steps": 10,
        "report_to": "none",
        "save_strategy": "steps",
        "save_steps": 500,
        checkpointing: {"use_reentrant": False},
        "dataloader_pin_memory": torch.cuda.is_available(),  # no "no accelerator is found" warning on a CPU
    }
    if model_dtype(config.model) == "bfloat16":
        args["bf16"] = True
    args.update(config.train)
    # The configs' (and TRL's) gradient_checkpointing*, under this version's names: no FutureWarning a user
    # of a shipped config cannot act on.
    for old, new in RENAMED_ARGUMENTS:
        if new in accepted and old in args:
            value = args.pop(old)
            if new not in config.train:
                args[new] = value
    return TrainingArguments(**{k: v for k, v in args.items() if k in accepted})


RENAMED_ARGUMENTS = (
    ("gradient_checkpointing", "activation_checkpointing"),
    ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs"),
)
