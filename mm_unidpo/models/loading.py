"""Load a model and its processor from a hub id or a local path, optionally 4-bit and with a LoRA adapter.

    model, processor = load_pretrained("llava-hf/llava-1.5-7b-hf", load_in_4bit=True, adapter="runs/x/adapter")

The family comes from the checkpoint's config (`model_type`), the class from transformers' auto
mappings (AutoModelForImageTextToText for VLMs, AutoModelForCausalLM otherwise). Weights load from
safetensors (PyTorch `.bin` only with `allow_bin_weights`, tensors only); `trust_remote_code` stays off
unless the caller turns it on. A model that cannot be loaded is a `ModelLoadError` naming it. In 4-bit,
only the language model is quantised: the vision tower, the projector and the LM head stay in `dtype` (checked after
loading, since a skip list that names the wrong modules silently quantises them).
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

import torch
import transformers
from peft import PeftModel
from transformers import AutoProcessor, AutoTokenizer, BitsAndBytesConfig, PretrainedConfig

from mm_unidpo.model_source import ModelLoadError, check_model_source, looks_local

from .families import FAMILIES, family_for_model_type, projector_module_names, vision_module_names
from .processors import load_processor_without_video, processor_folder

logger = logging.getLogger(__name__)

# Module-name fragments of the parts that stay out of 4-bit quantisation: every family's vision tower and
# projector (families/), and the LM head.
NOT_QUANTISED = (*vision_module_names(), *projector_module_names(), "lm_head")


_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # torch colours its messages


def _load_error(name_or_path: str, error: OSError) -> ModelLoadError:
    """A transformers / hub OSError rewritten to say which model and what to do."""
    first = str(error).strip().splitlines()[0].rstrip(".") if str(error).strip() else type(error).__name__
    hint = ""
    if "safetensors" in first:
        hint = (
            f". If it has PyTorch .bin weights only (e.g. the original LLaVA checkpoints), convert them once with "
            f"`mm-unidpo convert {name_or_path} --out DIR`, or set model.allow_bin_weights: true"
        )
    if looks_local(name_or_path):
        return ModelLoadError(f"cannot load the model from {name_or_path!r}: {first}{hint}")
    offline = " (HF_HUB_OFFLINE is set: only the local cache is read)" if os.environ.get("HF_HUB_OFFLINE") else ""
    return ModelLoadError(
        f"cannot load the model {name_or_path!r} from the hub{offline}: {first}{hint}. Check the id, the network and "
        f"HF_TOKEN (gated models need an accepted licence), or download it once with `hf download "
        f"{name_or_path}` and run offline, or give a local checkpoint folder"
    )


def detect_family(name_or_path: str, *, trust_remote_code: bool = False, **hub_kwargs: Any) -> str:
    """The family serving the checkpoint's `model_type` (read from its config.json, which needs no model
    class registered: the original LLaVA's `llava_llama` too); the causal-LM family for any other."""
    config, _ = PretrainedConfig.get_config_dict(name_or_path, trust_remote_code=trust_remote_code, **hub_kwargs)
    return family_for_model_type(config.get("model_type")).spec.name


def quantization_config(compute_dtype: torch.dtype = torch.bfloat16):
    """NF4 with double quantisation, the QLoRA recipe (Dettmers et al., arXiv 2305.14314)."""
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
        bnb_4bit_quant_storage=compute_dtype,
        # transformers matches skip entries from the start of a module's full name (or as its exact
        # suffix), so a bare "vision_tower" would not cover "model.vision_tower.encoder...": use patterns.
        llm_int8_skip_modules=[rf"(?:.*\.)?{name}" for name in NOT_QUANTISED],
    )


def quantised_module_names(model: torch.nn.Module) -> list[str]:
    """Names of the modules that hold 4-bit weights."""
    import bitsandbytes as bnb  # optional: only where 4-bit was asked for (its import probes CUDA)

    return [name for name, module in model.named_modules() if isinstance(module, bnb.nn.Linear4bit)]


def check_quantisation(model: torch.nn.Module) -> None:
    """Raise if any vision-tower / projector / LM-head module was quantised, or nothing was."""
    names = quantised_module_names(model)
    if not names:
        raise RuntimeError("load_in_4bit was requested but no Linear4bit module was found")
    wrong = [n for n in names if any(part in n.split(".") for part in NOT_QUANTISED)]
    if wrong:
        raise RuntimeError(f"these modules must stay unquantised but are 4-bit: {wrong[:5]}")


def load_processor(name_or_path: str, family: str, *, trust_remote_code: bool = False, **hub_kwargs: Any):
    if FAMILIES[family].spec.processor_class == "AutoTokenizer":
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, **hub_kwargs)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer
    try:
        return AutoProcessor.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, **hub_kwargs)
    except (AttributeError, ImportError, OSError, ValueError) as error:
        # transformers builds every video processor with torchvision; without it, Qwen-VL and
        # LLaVA-OneVision processors fail. Build the same processor without its video half.
        # Harmless for images and text, and nothing a user can act on: debug, not info.
        logger.debug("AutoProcessor failed (%s); loading the processor without its video processor", error)
        return load_processor_without_video(processor_folder(name_or_path, **hub_kwargs), **hub_kwargs)


def load_pretrained(
    name_or_path: str,
    *,
    family: str | None = None,
    adapter: str | None = None,
    load_in_4bit: bool = False,
    dtype: str | torch.dtype = "auto",
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
    device_map: Any = None,
    is_trainable: bool = False,
    allow_bin_weights: bool = False,
    **hub_kwargs: Any,
) -> tuple[Any, Any]:
    """(model, processor) for a hub id or local checkpoint, with an optional LoRA adapter on top.

    Weights load from safetensors only, unless `allow_bin_weights`: then a checkpoint without safetensors
    may load PyTorch `.bin` files, through transformers' torch.load(weights_only=True), which refuses any
    pickled object that is not a tensor (`mm-unidpo convert` writes a safetensors copy once instead)."""
    check_model_source(name_or_path)
    try:
        return _load(
            name_or_path,
            family=family,
            adapter=adapter,
            load_in_4bit=load_in_4bit,
            dtype=dtype,
            trust_remote_code=trust_remote_code,
            attn_implementation=attn_implementation,
            device_map=device_map,
            is_trainable=is_trainable,
            allow_bin_weights=allow_bin_weights,
            **hub_kwargs,
        )
    except ModelLoadError:
        raise
    except OSError as error:
        raise _load_error(name_or_path, error) from error
    except Exception as error:
        if "weights_only" in str(error) or type(error).__name__ == "UnpicklingError":
            detail = _ANSI.sub("", str(error).splitlines()[0]).rstrip(". ")
            raise ModelLoadError(
                f"{name_or_path}: refused to load PyTorch .bin weights that hold more than tensors "
                f"(loading them would run code stored in the file): {detail}. Only use such a "
                f"checkpoint if you trust where it came from, and convert it to safetensors in an "
                f"isolated environment"
            ) from error
        raise


def _load(
    name_or_path: str,
    *,
    family: str | None,
    adapter: str | None,
    load_in_4bit: bool,
    dtype: Any,
    trust_remote_code: bool,
    attn_implementation: str | None,
    device_map: Any,
    is_trainable: bool,
    allow_bin_weights: bool,
    **hub_kwargs: Any,
) -> tuple[Any, Any]:
    family = family or detect_family(name_or_path, trust_remote_code=trust_remote_code, **hub_kwargs)
    torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) and dtype != "auto" else dtype
    # use_safetensors=None: safetensors when present, else .bin, always with weights_only=True.
    kwargs: dict[str, Any] = {
        "dtype": torch_dtype,
        "trust_remote_code": trust_remote_code,
        "use_safetensors": None if allow_bin_weights else True,
        **hub_kwargs,
    }
    if allow_bin_weights:
        kwargs["weights_only"] = True
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if device_map is not None:
        kwargs["device_map"] = device_map
    if load_in_4bit:
        compute = torch_dtype if isinstance(torch_dtype, torch.dtype) else torch.bfloat16
        kwargs["quantization_config"] = quantization_config(compute)

    spec = FAMILIES[family].spec
    if spec.loader is not None:
        model, processor = spec.loader(name_or_path, **kwargs)
    else:
        model = getattr(transformers, spec.auto_class).from_pretrained(name_or_path, **kwargs)
        processor = load_processor(name_or_path, family, trust_remote_code=trust_remote_code, **hub_kwargs)
    if load_in_4bit:
        check_quantisation(model)
    if adapter:
        model = PeftModel.from_pretrained(model, adapter, is_trainable=is_trainable)
    return model, processor
