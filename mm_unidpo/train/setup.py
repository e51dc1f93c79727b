"""Build the policy (and, for full fine-tuning, the frozen reference) from a `TrainConfig`.

LoRA / QLoRA: the reference is the same base with the adapter disabled, so there is one copy of the
weights in memory. The vision tower and the projector stay frozen (and, in 4-bit, unquantised);
LoRA goes on every linear layer of the language model unless the config names modules.
"""

from __future__ import annotations

import copy
import logging
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from transformers.integrations import is_deepspeed_zero3_enabled, unset_hf_deepspeed_config

from mm_unidpo.losses import needs_reference
from mm_unidpo.models.families import (
    FAMILIES,
    FamilySpec,
    family_for_model,
    projector_module_names,
    vision_module_names,
)
from mm_unidpo.models.loading import NOT_QUANTISED, load_pretrained, vision_side

from .config import LoraSettings, TrainConfig, model_dtype

logger = logging.getLogger(__name__)


def language_model_linear_names(model: torch.nn.Module) -> list[str]:
    """Full names of the linear layers of the language model (vision tower, projector, LM head excluded)."""
    names = []
    for name, module in model.named_modules():
        if not _is_linear(module):
            continue
        if any(part in name.split(".") for part in NOT_QUANTISED):
            continue
        names.append(name)
    return names


def _is_linear(module: torch.nn.Module) -> bool:
    if isinstance(module, torch.nn.Linear):
        return True
    try:
        import bitsandbytes as bnb

        return isinstance(module, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt))
    except ImportError:
        return False


def lora_config(model: torch.nn.Module, settings: LoraSettings):
    from peft import LoraConfig

    names = language_model_linear_names(model)
    if settings.target_modules != "all-linear":
        suffixes = tuple(settings.target_modules)
        names = [n for n in names if n.split(".")[-1] in suffixes]
    if not names:
        raise ValueError(f"lora.target_modules={settings.target_modules!r} matches no language-model linear layer")
    # peft full-matches a string pattern against module names: an explicit alternation of the names
    # keeps LoRA off the vision tower and the projector, whatever their layers are called.
    pattern = "^(" + "|".join(re.escape(n) for n in names) + ")$"
    modules_to_save = [_projector_name(model)] if settings.train_projector else None
    return LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=pattern,
        modules_to_save=modules_to_save,
        task_type="CAUSAL_LM",
    )


def _projector_name(model: torch.nn.Module) -> str:
    for name, _ in model.named_modules():
        leaf = name.split(".")[-1]
        if leaf in projector_module_names():
            return leaf
    raise ValueError("lora.train_projector is set but the model has no multimodal projector")


def freeze_vision(model: torch.nn.Module) -> None:
    for name, param in model.named_parameters():
        if any(part in name.split(".") for part in (*vision_module_names(), *projector_module_names())):
            param.requires_grad_(False)


def check_frozen(model: torch.nn.Module, spec: FamilySpec, *, train_projector: bool = False) -> None:
    """Raise unless every parameter of the vision tower and projector the family's spec names is frozen (the
    projector's trainable copy under `lora.train_projector` excepted)."""
    side = tuple(vision_side(model, spec))
    allowed = spec.projector_modules if train_projector else ()
    wrong = [
        name
        for name, param in model.named_parameters()
        if param.requires_grad
        and any(name.startswith(f"{s}.") for s in side)
        and not any(part in allowed for part in name.split("."))
    ]
    if wrong:
        raise RuntimeError(f"family {spec.name!r}: vision tower / projector parameters left trainable: {wrong[:5]}")


def _moved_lora(model: torch.nn.Module, detail: str) -> str:
    """peft (0.21) rewrites LoRA targets named like transformers-4 MoE experts (gate_proj, up_proj, down_proj)
    into the fused expert weights of transformers 5 for some model types (glm4v_moe): dense MLP layers lose
    their LoRA and the experts get one of a kind that needs dropout 0 -- not the LoRA asked for."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    return (
        f"peft moves LoRA on model_type {model_type!r} from the MLP layers to its fused expert weights (its "
        f"transformers v4 -> v5 MoE conversion; {detail}), which is not the LoRA asked for: set "
        f"lora.target_modules to the attention projections, e.g. [q_proj, k_proj, v_proj, o_proj]"
    )


def reads_weights_before_training(config: TrainConfig) -> bool:
    """Whether a reference runs outside the training engine: the precompute pass before training, or
    full fine-tuning's frozen copy."""
    outside = config.reference.precompute or not config.lora.enabled
    return outside and needs_reference(config.loss.name, config.loss.params, config.loss.mixture)


@contextmanager
def whole_weights(args: Any, needed: bool) -> Iterator[None]:
    """Models loaded whole even under DeepSpeed ZeRO-3, where `needed`. Under ZeRO-3 from_pretrained
    partitions the weights as they load (whatever accelerate's zero3_init_flag says), and only the
    DeepSpeed engine gathers them: a reference run outside it (`reads_weights_before_training`) would
    read empty placeholders. Loaded whole, the engine partitions the policy when the Trainer wraps it;
    the frozen copy stays whole on every GPU (reference.precompute frees it before training)."""
    plugin = getattr(args, "deepspeed_plugin", None)
    if not needed or plugin is None or not is_deepspeed_zero3_enabled():
        yield
        return
    logger.info("ZeRO-3 with a reference outside the engine: loading the weights whole, partitioned at wrapping")
    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        plugin.set_deepspeed_weakref()


def build_models(config: TrainConfig, gradient_checkpointing: bool = False) -> tuple[Any, Any, Any]:
    """(policy, processor, reference_or_None). With LoRA the reference is None (adapter disabled)."""
    m = config.model
    model, processor = load_pretrained(
        m.name_or_path,
        family=m.family,
        load_in_4bit=m.load_in_4bit,
        dtype=model_dtype(m),
        trust_remote_code=m.trust_remote_code,
        attn_implementation=m.attn_implementation,
        allow_bin_weights=m.allow_bin_weights,
        **({"revision": m.revision} if m.revision else {}),  # type: ignore[arg-type]
    )
    spec = (FAMILIES[m.family] if m.family else family_for_model(model)).spec
    if not config.lora.enabled:
        freeze_vision(model)
        check_frozen(model, spec)
        # A frozen copy only when the objective reads a reference (SimPO, CPO, ORPO do not).
        reference = (
            copy.deepcopy(model).eval().requires_grad_(False)
            if needs_reference(config.loss.name, config.loss.params, config.loss.mixture)
            else None
        )
        return model, processor, reference

    from peft import get_peft_model

    # QLoRA preparation without peft's prepare_model_for_kbit_training: that casts every non-4-bit
    # weight (embeddings, LM head, the whole vision tower) to float32, ~3.5 GB more on Qwen2-VL-7B, which
    # is what decides whether a 7B VLM fits on 24 GB. The frozen weights stay in the compute dtype;
    # LoRA weights are float32 (peft's autocast_adapter_dtype) and the loss is computed in float32.
    model.requires_grad_(False)
    if gradient_checkpointing or m.load_in_4bit:
        model.enable_input_require_grads()
    lora = lora_config(model, config.lora)
    wanted = set(language_model_linear_names(model))
    try:
        with (
            warnings.catch_warnings()
        ):  # peft reads transformers' renamed is_gradient_checkpointing: not the user's to fix
            warnings.filterwarnings(
                "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning
            )
            model = get_peft_model(model, lora)
    except ValueError as error:
        if "ParamWrapper" not in str(error):
            raise
        raise ValueError(_moved_lora(model, str(error))) from None
    tuner = model.base_model
    moved = set(tuner.targeted_module_names) - wanted or getattr(tuner, "targeted_parameter_names", None)
    if moved:
        raise ValueError(_moved_lora(model, f"LoRA landed on {sorted(moved)[:3]}"))
    check_frozen(model, spec, train_projector=config.lora.train_projector)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    logger.info("LoRA: %d trainable parameters of %d (%.3f%%)", trainable, total, 100 * trainable / max(total, 1))
    return model, processor, None
