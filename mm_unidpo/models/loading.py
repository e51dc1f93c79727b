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

from .families import FAMILIES, FamilySpec, family_for_model_type, projector_module_names, vision_module_names
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


def vision_side(model: torch.nn.Module, spec: FamilySpec) -> list[str]:
    """Names of the modules the family's spec calls its vision tower and projector, in this model."""
    parts = (*spec.vision_modules, *spec.projector_modules)
    return [n for n, _ in model.named_modules() if n and parts and n.split(".")[-1] in parts]


def check_vision_side(model: torch.nn.Module, spec: FamilySpec, *, quantised: bool) -> None:
    """Hold a loaded model to its family's spec: the vision tower and projector it names exist, every linear
    layer outside the language model and the LM head lies in them (else it would be quantised and trained as
    the language model), and, in 4-bit, none of them holds 4-bit weights."""
    if not spec.vision_modules:
        return
    side = vision_side(model, spec)
    named = spec.vision_modules + spec.projector_modules
    what = f"{type(model).__name__} (family {spec.name!r}, vision modules {named})"
    if not side:
        raise ModelLoadError(f"{what}: no such module in this model; its family spec does not fit this checkpoint")
    names = {id(module): name for name, module in model.named_modules()}
    get_decoder = getattr(model, "get_decoder", None)
    decoder = names.get(id(get_decoder())) if callable(get_decoder) else None
    inside = (*side, *([decoder] if decoder else []))
    stray = [
        name
        for name, module in model.named_modules()
        if _linear(module)
        and not any(name == root or name.startswith(f"{root}.") for root in inside if root)
        and name.split(".")[-1] != "lm_head"
    ]
    if stray:
        raise ModelLoadError(
            f"{what}: linear layers outside the language model that the spec does not name as vision tower or "
            f"projector: {stray[:5]}; they would be quantised and trained as the language model"
        )
    if quantised:
        wrong = [n for n in quantised_module_names(model) if any(n == s or n.startswith(f"{s}.") for s in side)]
        if wrong:
            raise ModelLoadError(f"{what}: these vision / projector modules were quantised to 4-bit: {wrong[:5]}")


def _linear(module: torch.nn.Module) -> bool:
    return isinstance(module, torch.nn.Linear) or type(module).__name__ in ("Linear4bit", "Linear8bitLt")


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
    try:
        return load_processor_without_video(processor_folder(name_or_path, **hub_kwargs), **hub_kwargs)
    except ImportError as error:  # e.g. PixtralProcessor (Mistral-3): transformers needs torchvision to build it
        detail = " ".join(str(error).split())
        raise ModelLoadError(
            f"cannot build the processor of {name_or_path!r} here: {detail} This project does not install "
            f"torchvision, so this model cannot be served"
        ) from None


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
    if dtype == "auto" and not torch.cuda.is_available():
        # The checkpoint's own dtype is mostly bf16, whose matmuls are slow on most CPUs (SmolLM2-135M took
        # ~3x longer per math question): every command that loads with "auto" gets float32 there.
        dtype = "float32"
        logger.info("dtype auto without a GPU: float32")
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
        # the processor first: one that cannot be built here fails before the weights are downloaded
        processor = load_processor(name_or_path, family, trust_remote_code=trust_remote_code, **hub_kwargs)
        model = getattr(transformers, spec.auto_class).from_pretrained(name_or_path, **kwargs)
    if load_in_4bit:
        check_quantisation(model)
    check_vision_side(model, spec, quantised=load_in_4bit)
    if adapter:
        model = PeftModel.from_pretrained(model, adapter, is_trainable=is_trainable)
    return model, processor
