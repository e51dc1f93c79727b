"""Load-time checks of a `TrainConfig`: every value's type, its range, names that must exist, and the
model path, so that a bad config fails before anything is loaded, naming the key.

    check_config(config)   # raises config.ConfigError

Types come from the dataclasses' annotations (and `transformers.TrainingArguments`' for the `train`
section): a string where a number belongs is an error, not a crash deep inside the optimizer. The loss
section is checked by the loss core (`losses.check_loss`: each objective's own defaults and rules, e.g.
`beta` > 0 and finite for every objective, since a negative beta silently rewards the rejected response).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import TYPE_CHECKING, Any

from transformers import TrainingArguments

from mm_unidpo.data import FORMATS
from mm_unidpo.data.corruption import parse_corruption
from mm_unidpo.losses import build_loss
from mm_unidpo.models import FAMILIES
from mm_unidpo.yaml_config import ConfigError, check_types
from mm_unidpo.yaml_config import matches as _matches
from mm_unidpo.yaml_config import type_error as _type_error

from .sync import check_sync

if TYPE_CHECKING:  # config.py imports this module to validate its TrainConfig
    from .config import TrainConfig

DTYPES = ("auto", "float32", "float16", "bfloat16")


def check_config(config: TrainConfig) -> None:
    for section in ("model", "lora", "data", "loss", "reference"):
        check_types(section, getattr(config, section))
    _check_model(config)
    _check_lora(config)
    _check_data(config)
    _check_loss(config)
    if config.reference.batch_size < 1:
        raise ConfigError(f"reference.batch_size must be >= 1, got {config.reference.batch_size}")
    _check_train(config)


# ---- sections -----------------------------------------------------------------------------------


def _check_model(config: TrainConfig) -> None:
    m = config.model
    if not m.name_or_path:
        raise ConfigError(
            "model.name_or_path is required (a hub id such as llava-hf/llava-1.5-7b-hf, or a local folder)"
        )
    if m.dtype is not None and m.dtype not in DTYPES:
        raise ConfigError(f"model.dtype must be one of {', '.join(DTYPES)}, got {m.dtype!r}")
    if m.load_in_4bit and not config.lora.enabled:
        raise ConfigError("model.load_in_4bit needs lora.enabled: 4-bit weights cannot be trained directly")
    if m.max_tokens_per_row is not None and m.max_tokens_per_row < 1:
        raise ConfigError(f"model.max_tokens_per_row must be >= 1 (or null: one row), got {m.max_tokens_per_row}")
    if (
        m.head_chunk_size is not None
        and m.head_chunk_size != "auto"
        and (isinstance(m.head_chunk_size, str) or m.head_chunk_size < 1)
    ):
        raise ConfigError(
            f"model.head_chunk_size must be 'auto', a positive integer or null (materialise the "
            f"logits), got {m.head_chunk_size!r}"
        )
    if m.token_weight is not None and not (math.isfinite(m.token_weight) and m.token_weight > 0):
        raise ConfigError(f"model.token_weight must be > 0 (DDPO's weight; 4 in RLHF-V) or null, got {m.token_weight}")
    if m.family is not None and m.family not in FAMILIES:
        raise ConfigError(f"model.family {m.family!r} is not a model family; known: {', '.join(FAMILIES)}")


def _check_lora(config: TrainConfig) -> None:
    lora = config.lora
    if lora.r < 1:
        raise ConfigError(f"lora.r must be >= 1, got {lora.r}")
    if not (math.isfinite(lora.alpha) and lora.alpha > 0):
        raise ConfigError(f"lora.alpha must be > 0, got {lora.alpha}")
    if not 0 <= lora.dropout < 1:
        raise ConfigError(f"lora.dropout must be in [0, 1), got {lora.dropout}")
    if isinstance(lora.target_modules, str) and lora.target_modules != "all-linear":
        raise ConfigError(
            f"lora.target_modules must be 'all-linear' or a list of module names, got {lora.target_modules!r}"
        )


def _check_data(config: TrainConfig) -> None:
    d = config.data
    if not d.train:
        raise ConfigError("data.train is required (a data file, a saved dataset folder or a hub id)")
    if d.on_bad_record not in ("error", "skip"):
        raise ConfigError(f"data.on_bad_record must be 'error' or 'skip', got {d.on_bad_record!r}")
    if d.max_length < 2:
        raise ConfigError(f"data.max_length must be >= 2, got {d.max_length}")
    if d.limit is not None and d.limit < 1:
        raise ConfigError(f"data.limit must be >= 1 (or null for all records), got {d.limit}")
    if d.max_tokens_per_batch is not None and d.max_tokens_per_batch < 1:
        raise ConfigError(
            f"data.max_tokens_per_batch must be >= 1 (or null: train.per_device_train_batch_size "
            f"pairs), got {d.max_tokens_per_batch}"
        )
    if d.preflight_workers is not None and d.preflight_workers < 0:
        raise ConfigError(f"data.preflight_workers must be >= 0 (or null: automatic), got {d.preflight_workers}")
    if d.format is not None and d.format != "auto" and d.format not in FORMATS:
        raise ConfigError(f"data.format {d.format!r} is not a data format; known: {', '.join(FORMATS)} (or auto)")
    try:
        parse_corruption(d.corruption)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def _check_loss(config: TrainConfig) -> None:
    """The loss core owns each objective's rules (losses/registry.py); its errors name the key."""
    try:
        loss = build_loss(config.loss.name, config.loss.params, config.loss.mixture)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    problem = check_sync(config.reference, loss.needs_reference, str(config.loss.name))  # TR-DPO's reference
    if problem:
        raise ConfigError(problem)
    if loss.needs_contrast and config.data.corruption is None:
        raise ConfigError(
            "loss image_term needs data.corruption: the contrast image the chosen response is scored with "
            "(crop: mDPO's, noise: CHiP's, blank or shuffle)"
        )


_POSITIVE = {
    "learning_rate": "> 0",
    "per_device_train_batch_size": ">= 1",
    "per_device_eval_batch_size": ">= 1",
    "gradient_accumulation_steps": ">= 1",
    "num_train_epochs": "> 0",
    "logging_steps": "> 0",
    "save_steps": "> 0",
    "eval_steps": "> 0",
}


def _check_train(config: TrainConfig) -> None:
    train = config.train
    hints = typing.get_type_hints(TrainingArguments)
    known = {f.name for f in dataclasses.fields(TrainingArguments)}
    bad = sorted(set(train) - known - {"resume_from_checkpoint", "overwrite_output_dir"})
    if bad:
        raise ConfigError(
            f"train.{bad[0]} is not a transformers.TrainingArguments field"
            + (f" (also: {bad[1:]})" if len(bad) > 1 else "")
        )
    if "output_dir" not in train or not train["output_dir"]:
        raise ConfigError("train.output_dir is required")
    resume = train.get("resume_from_checkpoint")
    if not isinstance(resume, (bool, str, type(None))):  # ours (run.py): true / "latest" / a checkpoint path
        raise ConfigError(f"train.resume_from_checkpoint must be true/false or a checkpoint path, got {resume!r}")
    for key, value in train.items():
        expected = hints.get(key) if key not in ("resume_from_checkpoint", "overwrite_output_dir") else bool
        if key == "resume_from_checkpoint":
            continue
        if expected is not None and _is_simple(expected) and not _matches(value, expected):
            raise _type_error(f"train.{key}", value, expected)
    for key, rule in _POSITIVE.items():
        value = train.get(key)
        if value is None:
            continue
        ok = math.isfinite(value) and (value > 0 if rule == "> 0" else value >= 1)
        if not ok:
            raise ConfigError(f"train.{key} must be {rule}, got {value}")
    for key in ("weight_decay", "max_grad_norm", "warmup_steps"):
        if key in train and not (math.isfinite(train[key]) and train[key] >= 0):
            raise ConfigError(f"train.{key} must be >= 0 and finite, got {train[key]}")


def _is_simple(expected: Any) -> bool:
    """An annotation made of bool / int / float / str / None only (the ones worth checking here)."""
    options = (
        typing.get_args(expected) if typing.get_origin(expected) in (typing.Union, types.UnionType) else (expected,)
    )
    return all(option in (bool, int, float, str, type(None)) for option in options)
