"""The chosen response under the contrast image (one more block: its own prompt with the corrupted view)
and the rejected response under `rejected_images` equal a plain forward of the model on the processor's
own rendering with those images, in the packed and the plain layout."""

from __future__ import annotations

import pytest
import torch

from mm_unidpo.data import PreferenceRecord, Prompt
from mm_unidpo.data.corruption import Corruption, contrast_images
from mm_unidpo.models import FAMILIES
from mm_unidpo.testing import available_families, tiny

from .helpers import IMAGES, make_adapter, naive_logp, need_images
from .helpers import one_thread  # noqa: F401  (autouse)

PACKED = [f for f in available_families() if "packed" in FAMILIES[f].spec.layouts and f != "causal_lm"]  # VLMs


def records() -> list[PreferenceRecord]:
    root = str(IMAGES)
    return [
        PreferenceRecord(
            "<image>\nWhat is in the image?",
            "An astronaut in a white suit.",
            "A horse.",
            images=["astronaut.png"],
            image_root=root,
            id="a",
            index=0,
        ),
        PreferenceRecord(
            "Describe <image> briefly.",
            "A cat.",
            "A dog sleeping on a red sofa.",
            images=["chelsea.png"],
            image_root=root,
            id="b",
            index=1,
            rejected_images=["horse.png"],
        ),
    ]


def expected(adapter, model, family, data, corruption):
    """Per record, (chosen, rejected, chosen under the contrast view): naive one-example forwards."""
    out = []
    for record in data:
        encoded = adapter.encode(record)
        views = contrast_images(record, corruption, data)
        contrast = adapter.encode_prompt(Prompt(record.prompt, views, record.id, record.index))
        rejected_prompt = (
            adapter.encode_prompt(
                Prompt(record.prompt, record.rejected_images, record.id, record.index, record.image_root)
            )
            if record.rejected_images is not None
            else encoded
        )
        out.append(
            (
                naive_logp(family, model, encoded, encoded.chosen_ids),
                naive_logp(family, model, rejected_prompt, encoded.rejected_ids),
                naive_logp(family, model, contrast, encoded.chosen_ids),
            )
        )
    return torch.tensor(out, dtype=torch.float32)


@pytest.mark.parametrize(
    "family,layout", [("llava", "packed"), ("llava", "plain-right"), ("qwen2_vl", "packed"), ("qwen2_vl", "plain-left")]
)
def test_contrast_and_rejected_images_equal_a_plain_forward(family, layout):
    need_images("astronaut.png", "chelsea.png", "horse.png")
    model, processor = tiny(family)
    data = records()
    corruption = Corruption("crop", seed=1)
    adapter = make_adapter(
        model,
        processor,
        layout,
        contrast_views=lambda r: contrast_images(r, corruption, data),
        contrast_key=corruption.key(),
    )
    batch = adapter.collate(data)
    if layout == "packed":  # one row: [p][c][r] [p][c] [p_rej][r] [p_crop][c] back to back
        assert batch.blocks.num_rows == 1 and len(batch.blocks.blocks) == 5
    else:
        assert batch.blocks.num_rows == 6  # one more row per record, and one for the rejected images
    with torch.no_grad():
        out = adapter.sequence_logps(model, batch)
    got = torch.stack([out.chosen_logps, out.rejected_logps, out.chosen_contrast], dim=1).float()
    torch.testing.assert_close(got, expected(adapter, model, family, data, corruption), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(out.chosen_contrast, out.chosen_logps)  # the view changes the log-prob
    assert torch.equal(out.chosen_lengths, torch.tensor([len(adapter.encode(r).chosen_ids) for r in data]))


@pytest.mark.slow
@pytest.mark.parametrize("family", [f for f in PACKED if f not in ("llava", "qwen2_vl")])
def test_every_packed_family(family):
    need_images("astronaut.png", "chelsea.png", "horse.png")
    model, processor = tiny(family)
    data = records()
    corruption = Corruption("blank")
    adapter = make_adapter(model, processor, "packed", contrast_views=lambda r: contrast_images(r, corruption, data))
    with torch.no_grad():
        out = adapter.sequence_logps(model, adapter.collate(data))
    got = torch.stack([out.chosen_logps, out.rejected_logps, out.chosen_contrast], dim=1).float()
    torch.testing.assert_close(got, expected(adapter, model, family, data, corruption), rtol=1e-4, atol=1e-4)


def test_without_contrast_the_batch_is_unchanged():
    need_images("astronaut.png", "chelsea.png", "horse.png")
    model, processor = tiny("llava")
    data = [records()[0]]
    adapter = make_adapter(model, processor, "packed")
    batch = adapter.collate(data)
    assert len(batch.blocks.blocks) == 1 and batch.blocks.num_slots == 2
    with torch.no_grad():
        assert adapter.sequence_logps(model, batch).chosen_contrast is None
