"""How encoded sequences become rows, forward inputs and scored positions (blocks.py describes them).

    LAYOUTS[name].plan(items, **options) -> Blocks      # items: (prompt length, response lengths) each
    LAYOUTS[name].attention_inputs(model, blocks, ...)  # the masks / boundaries the forward needs

Adding a layout = one module with `NAME`, `plan` and `attention_inputs` + one line here. A family
declares the layouts that are exact for it (`FamilySpec.layouts`); the adapter picks one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from . import packed, plain, varlen
from .blocks import CHOSEN, IGNORE_INDEX, PAD, PROMPT, REJECTED, Block, Blocks, PairBatch, ScoredPositions, pad_rows


@dataclass(frozen=True)
class Layout:
    name: str
    plan: Callable[..., Blocks]
    attention_inputs: Callable[..., dict[str, Any]]

    @classmethod
    def of(cls, module: ModuleType) -> Layout:
        return cls(module.NAME, module.plan, module.attention_inputs)


LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in map(Layout.of, (plain, packed, varlen))}

__all__ = [
    "CHOSEN",
    "IGNORE_INDEX",
    "LAYOUTS",
    "PAD",
    "PROMPT",
    "REJECTED",
    "Block",
    "Blocks",
    "Layout",
    "PairBatch",
    "ScoredPositions",
    "pad_rows",
]
