"""Model adapters: image-conditioned sequence log-probs for each model family.

    adapter = get_adapter(model, processor)      # family picked from the model's config
    batch = adapter.collate(records)
    out = adapter.sequence_logps(model, batch)   # chosen_logps, rejected_logps, chosen/rejected_lengths

Adding a family = one adapter file + one line in `ADAPTERS`. The causal-LM adapter is the fallback
for any model without a vision tower, so it comes last.
"""

from __future__ import annotations

from typing import Any

from .base import Adapter, EncodedPair, PairBatch, SequenceLogps, response_logps, unwrap_model
from .causal_lm import CausalLMAdapter
from .llava import LlavaAdapter, LlavaNextAdapter, LlavaOnevisionAdapter
from .llava_orig import LlavaOrigAdapter
from .qwen_vl import Qwen2_5_VLAdapter, Qwen2VLAdapter, Qwen3VLAdapter

ADAPTERS: dict[str, type[Adapter]] = {
    "llava": LlavaAdapter,
    "llava_next": LlavaNextAdapter,
    "llava_onevision": LlavaOnevisionAdapter,
    "qwen2_vl": Qwen2VLAdapter,
    "qwen2_5_vl": Qwen2_5_VLAdapter,
    "qwen3_vl": Qwen3VLAdapter,
    "llava_orig": LlavaOrigAdapter,
    "causal_lm": CausalLMAdapter,
}

__all__ = ["ADAPTERS", "Adapter", "EncodedPair", "PairBatch", "SequenceLogps", "get_adapter", "response_logps",
           "unwrap_model"]


def get_adapter(model: Any, processor: Any, family: str | None = None, **options: Any) -> Adapter:
    """The adapter for `model` (family detected from its config unless given); `options` go to the
    adapter (max_length, padding_side, max_image_pixels, image_root)."""
    base = unwrap_model(model)
    if family is not None:
        if family not in ADAPTERS:
            raise ValueError(f"unknown model family {family!r}; known: {', '.join(ADAPTERS)}")
        return ADAPTERS[family](base, processor, **options)
    for name, adapter_cls in ADAPTERS.items():
        if name != "causal_lm" and adapter_cls.matches(base):
            return adapter_cls(base, processor, **options)
    if ADAPTERS["causal_lm"].matches(base):
        return ADAPTERS["causal_lm"](base, processor, **options)
    model_type = getattr(getattr(base, "config", None), "model_type", None)
    raise ValueError(f"no adapter for {type(base).__name__} (model_type={model_type!r}); "
                     f"known families: {', '.join(ADAPTERS)}")
