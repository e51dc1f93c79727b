"""Image-conditioned sequence log-probs for each model family, along three axes:

    families/   what differs per model: chat template, tokenizing, vision tensors, positions, splicing
    layouts/    how encoded sequences become rows, masks and scored positions (plain, packed, varlen)
    head.py     the LM head on the scored positions only, chunked (attention.py: per-pair attention)

encoding.py turns records and prompts into ids, logps.py runs the one forward, adapter.py binds a
family and a layout:

    adapter = get_adapter(model, processor)
    batch = adapter.collate(records)
    out = adapter.sequence_logps(model, batch)   # chosen_logps, rejected_logps, chosen/rejected_lengths

Adding a family = one file in families/ + one line in `FAMILIES`.
"""

from __future__ import annotations

from .adapter import Adapter, get_adapter
from .encoding import EncodedPair, EncodedPrompt
from .families import FAMILIES, Family, FamilySpec
from .layouts import IGNORE_INDEX, LAYOUTS, PairBatch, pad_rows
from .logps import SequenceLogps
from .utils import to_model_inputs, unwrap_model

__all__ = [
    "FAMILIES",
    "IGNORE_INDEX",
    "LAYOUTS",
    "Adapter",
    "EncodedPair",
    "EncodedPrompt",
    "Family",
    "FamilySpec",
    "PairBatch",
    "SequenceLogps",
    "get_adapter",
    "pad_rows",
    "to_model_inputs",
    "unwrap_model",
]
