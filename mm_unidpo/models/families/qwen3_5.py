"""Qwen3.5 (`qwen3_5`): Qwen3-VL's vision side, processor (Qwen3VLProcessor) and 3-D M-RoPE positions,
with a hybrid language model: most layers are Gated DeltaNet (linear attention), a recurrence along
the row, and every few a full-attention layer.

Plain layout only. A recurrent layer's state at a token depends on every earlier token of its row:
in the packed layout a rejected response would carry the chosen one's state, and a pair the previous
pair's; no attention mask can stop that. (Varlen kernels would need the recurrence restarted at each
sequence boundary, which the plain layout gives without them.) Padding is exact: the model zeroes padded
positions before every recurrent layer, so left padding leaves the state at zero until the first token.
"""

from __future__ import annotations

from .base import FamilySpec
from .qwen_vl import _QWEN_VL, Qwen3VL


class Qwen3_5(Qwen3VL):
    spec = FamilySpec("qwen3_5", model_types=("qwen3_5",), **{**_QWEN_VL, "layouts": ("plain",)})  # type: ignore[arg-type]
