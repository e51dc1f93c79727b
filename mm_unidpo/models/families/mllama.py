"""Llama-3.2-Vision (`mllama`, meta-llama/Llama-3.2-*-Vision-Instruct): images outside the token stream.

The template writes one ``<|image|>`` token per image; the processor does not expand it. The images
(``pixel_values`` (texts, images, tiles, 3, H, W), ``aspect_ratio_ids``, ``aspect_ratio_mask``) are
encoded once per row and reached only through the cross-attention layers, which every text token
attends with its row of ``cross_attention_mask`` (tokens, images, tiles): the images from the last
``<|image|>`` group before it on (an earlier image stops at the next image token), padding tiles left out.

A prompt's mask comes from the processor; every response token gets the prompt's last row, which is
what the processor computes for the whole conversation (all images lie in the prompt, and the last
group's range runs to the end of the sequence). A block without images gets all-zero images and mask
rows: its tokens skip the cross-attention as they do with no image at all.

A token with no image to attend (before the first image, or in a row without images next to rows with
some) is not skipped by transformers' cross-attention layer: its all-masked row attends uniformly to
every vision token of its row, padding images included, while a forward without any image skips the
layer. So a row's log-probs depend on how many images the other rows of its forward hold: the batch
goes through the model in parts (`forward_parts`), one per image count, each without padding images
(rows without images: no images at all), which is what each sequence gets alone.

Plain layout only: the images are a per-row input shared by every token of the row, so pairs packed
into one row would cross-attend each other's images unless the mask were split per pair, and the
padding-free varlen row would hold every sequence's images at once.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from ..layouts.blocks import Blocks, PairBatch
from .base import Family, FamilySpec

_PER_ROW = ("pixel_values", "aspect_ratio_ids", "aspect_ratio_mask")


class Mllama(Family):
    spec = FamilySpec(
        "mllama",
        model_types=("mllama",),
        vision_modules=("vision_model",),
        projector_modules=("multi_modal_projector",),
        layouts=("plain",),
    )

    def processor_images(self, rows: list[list[Any]]) -> list[Any]:
        """One list of images per text, as the processor lays them out."""
        return [list(row) for row in rows]

    def stack_vision(self, per_block: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """One entry per block (its row): images padded with all-zero ones (aspect ratio 0, no tiles, never
        attended) to the batch's most; a block without images gets only those. The cross-attention
        mask keeps each block's prompt rows, padded at their end, for `model_inputs` to lay out."""
        keys = [k for k in (*_PER_ROW, "cross_attention_mask") if any(k in v for v in per_block)]
        if not keys:
            return {}
        shapes = {
            k: [
                max(v[k].shape[d] for v in per_block if k in v)
                for d in range(1, next(v[k] for v in per_block if k in v).dim())
            ]
            for k in keys
        }
        images = max(shapes[k][0] for k in _PER_ROW if k in shapes)
        shapes["cross_attention_mask"][1] = images
        for k in _PER_ROW:
            shapes[k][0] = images
        out = {}
        for k in keys:
            parts = []
            for v in per_block:
                if k not in v:
                    like = next(b[k] for b in per_block if k in b)
                    parts.append(like.new_zeros((1, *shapes[k])))
                    continue
                pad = []
                for d in reversed(range(1, v[k].dim())):
                    pad += [0, shapes[k][d - 1] - v[k].shape[d]]
                parts.append(torch.nn.functional.pad(v[k], pad))
            out[k] = torch.cat(parts)
        return out

    def model_inputs(self, model: Any, batch: PairBatch) -> tuple[dict[str, Any], Blocks]:
        """The cross-attention mask laid out over the rows: each prompt's own rows, then every response
        token the prompt's last row."""
        vision = dict(batch.vision)
        prompt_masks = vision.pop("cross_attention_mask", None)
        inputs = {"input_ids": batch.input_ids, **vision, **batch.token_extras}
        if prompt_masks is not None:
            blocks = batch.blocks
            mask = prompt_masks.new_zeros((blocks.num_rows, blocks.width, *prompt_masks.shape[2:]))
            for i, b in enumerate(blocks.blocks):
                mask[b.row, b.offset : b.offset + b.prompt] = prompt_masks[i, : b.prompt]
                for start, n in b.response_spans():
                    mask[b.row, start : start + n] = prompt_masks[i, b.prompt - 1]
            inputs["cross_attention_mask"] = mask.to(batch.input_ids.device)
        return inputs, batch.blocks

    def forward_parts(self, batch: PairBatch) -> list[PairBatch] | None:
        """One part per number of images a row holds, its images not padded beyond it; None when every row
        holds as many as the batch's image tensors (or there are none)."""
        tiles = batch.vision.get("aspect_ratio_mask")
        if tiles is None:
            return None
        counts = (tiles.sum(-1) > 0).sum(-1).tolist()  # real images per block (padding images have no tile)
        if all(n == tiles.shape[1] for n in counts):
            return None
        if batch.layout != "plain" or any(b.row != i for i, b in enumerate(batch.blocks.blocks)):
            raise ValueError(f"mllama runs the plain layout only (one block per row), not {batch.layout!r}")
        groups: dict[int, list[int]] = {}
        for i, n in enumerate(counts):
            groups.setdefault(n, []).append(i)
        return [self._part(batch, rows, n) for n, rows in sorted(groups.items())]

    @staticmethod
    def _part(batch: PairBatch, rows: list[int], images: int) -> PairBatch:
        """Rows `rows` (one block each) of a plain batch with their first `images` images."""
        old = batch.blocks
        blocks = Blocks(
            tuple(dataclasses.replace(old.blocks[r], row=k) for k, r in enumerate(rows)),
            len(rows),
            old.width,
            old.num_items,
            old.num_slots,
            old.padding_side,
        )
        index = torch.tensor(rows, device=batch.input_ids.device)
        vision = {}
        if images:
            for key, value in batch.vision.items():
                value = value[index.to(value.device)]
                vision[key] = value[:, :, :images] if key == "cross_attention_mask" else value[:, :images]
        return dataclasses.replace(
            batch,
            input_ids=batch.input_ids[index],
            blocks=blocks,
            vision=vision,
            token_extras={k: v[index.to(v.device)] for k, v in batch.token_extras.items()},
        )
