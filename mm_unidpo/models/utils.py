"""Model helpers shared by the adapters and the commands: the model under its wrappers, inputs onto its device."""

from __future__ import annotations

from typing import Any

import torch


def unwrap_model(model: Any) -> Any:
    """The transformers model under peft / DDP / accelerate wrappers."""
    while True:
        if hasattr(model, "get_base_model") and callable(model.get_base_model):
            model = model.get_base_model()
        elif hasattr(model, "module") and hasattr(model.module, "config"):  # DDP and similar wrappers
            model = model.module
        else:
            return model


def to_model_inputs(inputs: dict[str, Any], model: Any, device: Any = None) -> dict[str, Any]:
    """Tensors onto `device` (default: the model's), floating ones in the model's dtype."""
    device = device if device is not None else getattr(model, "device", None)
    dtype = getattr(model, "dtype", None)
    out = {}
    for key, value in inputs.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device)
            if value.is_floating_point() and dtype is not None and dtype.is_floating_point:
                value = value.to(dtype)
        out[key] = value
    return out
