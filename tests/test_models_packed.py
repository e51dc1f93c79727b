"""The shared-prefix fast path equals the plain two-row path: log-probs, gradients and training curves."""

from __future__ import annotations

import json

import pytest
import torch

from mm_unidpo.data import PreferenceRecord
from mm_unidpo.models import get_adapter
from mm_unidpo.models.packed import CHOSEN, PAD, PROMPT, REJECTED, PackedPairBatch, attention_bias
from mm_unidpo.testing import available_families, tiny

from .helpers import IMAGES, packed_and_plain_training_curves

needs_images = pytest.mark.skipif(not IMAGES.is_dir(), reason=f"real photos not found at {IMAGES}")


def _records(text_only: bool) -> list[PreferenceRecord]:
    rows = [("<image>\nWhat is in the image?", "An astronaut in a white suit.", "A horse.", "astronaut.png"),
            ("Describe <image> briefly, with all the detail you can see.", "A cat.",
             "A dog sleeping on a red sofa next to a window.", "chelsea.png"),
            ("<image>\nAnd this one?", "A cup of coffee on a table.", "Tea.", "camera.png")]
    out = []
    for i, (prompt, chosen, rejected, photo) in enumerate(rows):
        if text_only:
            out.append(PreferenceRecord(prompt.replace("<image>", "").strip(), chosen, rejected, id=f"t{i}", index=i))
        else:
            out.append(PreferenceRecord(prompt, chosen, rejected, images=[photo], image_root=str(IMAGES),
                                        id=f"v{i}", index=i))
    return out


FAST_FAMILIES = [f for f in available_families() if f != "llava_orig"]


@needs_images
@pytest.mark.parametrize("family", FAST_FAMILIES)
def test_fast_path_equals_plain_path_logps_and_gradients(family):
    model, processor = tiny(family)
    records = _records(text_only=family == "causal_lm")
    plain, fast = get_adapter(model, processor, shared_prefix=False), get_adapter(model, processor)
    assert fast.shared_prefix and isinstance(fast.collate(records), PackedPairBatch)

    def run(adapter):
        model.zero_grad()
        out = adapter.sequence_logps(model, adapter.collate(records))
        (out.chosen_logps.sum() - 0.5 * out.rejected_logps.sum()).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return out, grads

    a, grads_a = run(plain)
    b, grads_b = run(fast)
    torch.testing.assert_close(b.chosen_logps, a.chosen_logps, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(b.rejected_logps, a.rejected_logps, rtol=1e-4, atol=1e-4)
    assert torch.equal(b.chosen_lengths, a.chosen_lengths) and torch.equal(b.rejected_lengths, a.rejected_lengths)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=1e-3, atol=1e-5, msg=name)


def test_packed_mask_keeps_the_rejected_span_from_the_chosen_span():
    segments = torch.tensor([[PAD, PROMPT, PROMPT, CHOSEN, CHOSEN, PAD, REJECTED, REJECTED]])
    allowed = (attention_bias(segments, torch.float32) == 0)[0, 0]
    rejected_query = 7
    assert allowed[rejected_query, [1, 2, 6, 7]].all()  # the prompt and its own span
    assert not allowed[rejected_query, [0, 3, 4, 5]].any()  # never padding or the chosen span
    assert allowed[4, [1, 2, 3, 4]].all() and not allowed[4, [0, 5, 6, 7]].any()
    assert not allowed[3, 4]  # causal inside a span
    assert allowed[0, 0] and allowed[5, 5]  # padding rows see themselves only: no empty softmax


def test_fast_path_scores_only_response_columns():
    model, processor = tiny("causal_lm")
    adapter = get_adapter(model, processor)
    batch = adapter.collate(_records(text_only=True))
    seen = {}

    def hook(module, args, kwargs, output):
        seen["logits_columns"] = output.logits.shape[1]

    handle = model.register_forward_hook(hook, with_kwargs=True)
    adapter.sequence_logps(model, batch)
    handle.remove()
    width = batch.input_ids.shape[1]
    responses = batch.chosen_targets.shape[1] + batch.rejected_targets.shape[1]
    assert seen["logits_columns"] == responses - 1 < width - batch.prompt_length


@pytest.mark.parametrize("family", ["causal_lm", "llava"])
def test_plain_path_runs_the_lm_head_only_where_a_response_token_is_predicted(family):
    """The plain layout (flash-attention kernels) also keeps only the columns that predict a response
    token in some row: from the shortest prompt's last position to the longest sequence's end."""
    model, processor = tiny(family)
    adapter = get_adapter(model, processor, shared_prefix=False)
    records = _records(text_only=True) if family == "causal_lm" else [
        PreferenceRecord("<image>\nWhat is this?", "A red circle.", "A square.", images=[_square()]),
        PreferenceRecord("<image>\nDescribe it in one short sentence, please.", "Red.", "A blue star on grass.",
                         images=[_square()])]
    batch = adapter.collate(records)
    seen = {}
    handle = model.register_forward_hook(lambda m, a, k, out: seen.update(columns=out.logits.shape[1]),
                                         with_kwargs=True)
    adapter.sequence_logps(model, batch)
    handle.remove()
    scored = (batch.labels[:, 1:] != -100).any(0).nonzero().squeeze(-1)
    assert seen["columns"] == len(scored) < batch.input_ids.shape[1] - 1
    if family == "llava":
        assert seen["columns"] < batch.input_ids.shape[1] - 16  # not the image tokens


def _square():
    from PIL import Image

    return Image.new("RGB", (40, 30), (200, 30, 30))


@needs_images
def test_training_curves_match_between_fast_and_plain_paths(tmp_path):
    model, processor = tiny("llava")
    model.save_pretrained(tmp_path / "llava")
    processor.save_pretrained(tmp_path / "llava")
    with open(tmp_path / "data.jsonl", "w") as f:
        for i, r in enumerate(_records(text_only=False) * 4):
            f.write(json.dumps({"id": f"r{i}", "prompt": r.prompt, "chosen": r.chosen, "rejected": r.rejected,
                                "images": r.images, "score_chosen": 7.0, "score_rejected": 3.0}) + "\n")
    curves = packed_and_plain_training_curves(tmp_path, tmp_path / "llava", loss="unidpo", max_steps=6)
    assert len(curves[True]) == 6
    torch.testing.assert_close(torch.tensor(curves[True]), torch.tensor(curves[False]), rtol=1e-3, atol=1e-4)
