"""Offline test fixtures: tiny random-weight models of the real classes, with processors.

    from mm_unidpo.testing import tiny
    model, processor = tiny("qwen2_vl", seed=0)

See :mod:`mm_unidpo.testing.tiny_models` (families, sizes, overrides), :mod:`.tokenizer` (offline BPE
tokenizers with chat templates) and :mod:`mm_unidpo.models.processors` (building Qwen-VL / LLaVA-OneVision
processors without a video processor, i.e. without torchvision -- also usable for real checkpoints).
Nothing here downloads anything.
"""

from __future__ import annotations

from mm_unidpo.models.processors import (
    load_processor_without_video,
    processor_without_video,
    qwen_vl_processor_without_video,
)

from .tiny_models import FAMILIES, GENERIC, available_families, tiny
from .tokenizer import tiny_tokenizer

__all__ = [
    "FAMILIES",
    "GENERIC",
    "available_families",
    "load_processor_without_video",
    "processor_without_video",
    "qwen_vl_processor_without_video",
    "tiny",
    "tiny_tokenizer",
]
