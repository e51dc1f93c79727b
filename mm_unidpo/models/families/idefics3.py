"""Idefics3 (`idefics3`, HuggingFaceM4/Idefics3-8B-Llama3) and the families built on it (SmolVLM).

The processor splits each image into tiles plus a global view and expands each ``<image>`` into
``<fake_token_around_image><row_i_col_j>`` + image tokens per tile, then the global view's. Its
``pixel_values`` are per text: (texts, most tiles, 3, H, W) with all-zero padding tiles (the model drops
those) and a ``pixel_attention_mask``; a batch's blocks are padded the same way. The vision encoder sees
one tile at a time and the language model (Llama) is causal: every layout is the plain computation.
"""

from __future__ import annotations

from typing import Any

import torch

from .base import Family, FamilySpec


class Idefics3(Family):
    spec = FamilySpec(
        "idefics3", model_types=("idefics3",), vision_modules=("vision_model",), projector_modules=("connector",)
    )

    def processor_images(self, rows: list[list[Any]]) -> list[Any]:
        """One list of images per text (SmolVLM's processor reads a flat list as one text's images)."""
        return [list(row) for row in rows]

    def stack_vision(self, per_block: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Each block's (1, tiles, ...) tensors padded with zeros (padding tiles, masked-out pixels) to the
        batch's largest in every dimension, then concatenated: what the processor gives for the texts
        together."""
        out = {}
        for key in sorted({k for v in per_block for k in v}):
            parts = [v[key] for v in per_block if key in v]
            if parts[0].dim() < 2:
                out[key] = torch.cat(parts)
                continue
            most = [max(p.shape[d] for p in parts) for d in range(1, parts[0].dim())]
            padded = []
            for p in parts:
                pad = []
                for d in reversed(range(1, p.dim())):
                    pad += [0, most[d - 1] - p.shape[d]]
                padded.append(torch.nn.functional.pad(p, pad))
            out[key] = torch.cat(padded)
        return out
