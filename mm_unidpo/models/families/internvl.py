"""InternVL 3 / 3.5 in transformers format (`internvl`, OpenGVLab/InternVL3_5-*-HF).

The processor crops each image into tiles (plus a thumbnail), expands each ``<IMG_CONTEXT>`` into
``<img>`` + tiles x image tokens + ``</img>`` and returns every tile of every image flat, in token
order: the defaults fit. The vision encoder sees one tile at a time and the language model (Qwen2 /
Qwen3) is causal with 1-D positions: every layout is the plain computation.
"""

from __future__ import annotations

from .base import Family, FamilySpec


class InternVL(Family):
    spec = FamilySpec("internvl", model_types=("internvl",))
