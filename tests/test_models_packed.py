"""The packed fast path (several pairs back to back in a row, shared prefixes, per-pair attention, LM head
on scored positions only) equals the plain two-row path: log-probs, gradients and training curves."""

from __future__ import annotations

import json

import pytest
import torch

from mm_unidpo.data import PreferenceRecord
from mm_unidpo.models import FAMILIES as REGISTRY
from mm_unidpo.models import get_adapter
from mm_unidpo.models.attention import NAME as PACKED_ATTENTION
from mm_unidpo.models.layouts import CHOSEN, LAYOUTS, PAD, PROMPT, REJECTED
from mm_unidpo.models.layouts.packed import attention_allowed, plan
from mm_unidpo.testing import available_families, tiny

from .helpers import IMAGES, packed_and_plain_training_curves
from .helpers import one_thread  # noqa: F401  (an autouse fixture: importing it applies it to this module)

needs_images = pytest.mark.skipif(not IMAGES.is_dir(), reason=f"real photos not found at {IMAGES}")


def _records(text_only: bool) -> list[PreferenceRecord]:
    rows = [("<image>\nWhat is in the image?", "An astronaut in a white suit.", "A horse.", ["astronaut.png"]),
            ("Describe <image> briefly, with all the detail you can see.", "A cat.",
             "A dog sleeping on a red sofa next to a window.", ["chelsea.png"]),
            ("<image>\nAnd this one?", "A cup of coffee on a table.", "Tea.", ["camera.png"]),
            ("Compare <image> with <image>.", "The first is a rocket, the second a horse.", "Both are cats.",
             ["rocket.jpg", "horse.png"])]
    out = []
    for i, (prompt, chosen, rejected, photos) in enumerate(rows):
        if text_only:
            out.append(PreferenceRecord(prompt.replace("<image>", "it").strip(), chosen, rejected, id=f"t{i}", index=i))
        else:
            out.append(PreferenceRecord(prompt, chosen, rejected, images=photos, image_root=str(IMAGES),
                                        id=f"v{i}", index=i))
    return out


def _run(adapter, model, records):
    model.zero_grad()
    out = adapter.sequence_logps(model, adapter.collate(records))
    (out.chosen_logps.sum() - 0.5 * out.rejected_logps.sum()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, grads


def _assert_same(a, b, grads_a, grads_b):
    torch.testing.assert_close(b.chosen_logps, a.chosen_logps, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(b.rejected_logps, a.rejected_logps, rtol=1e-4, atol=1e-4)
    assert torch.equal(b.chosen_lengths, a.chosen_lengths) and torch.equal(b.rejected_lengths, a.rejected_lengths)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=1e-3, atol=1e-5, msg=name)


@needs_images
@pytest.mark.parametrize("family", available_families())
@pytest.mark.parametrize("variant", ["one row", "budget rows", "pair per row", "materialised head"])
def test_packed_path_equals_plain_path_logps_and_gradients(family, variant):
    """Four pairs (one with two images) of very different lengths: every packed variant gives the plain
    layout's log-probs and gradients (the plain path itself is checked against a naive one-example
    computation in test_models_adapters.py)."""
    model, processor = tiny(family)
    records = _records(text_only=family == "causal_lm")
    options = {"one row": {}, "budget rows": {"max_tokens_per_row": 1}, "pair per row": {"pack_pairs": False},
               "materialised head": {"head_chunk_size": None}}[variant]
    plain = get_adapter(model, processor, shared_prefix=False)
    packed = get_adapter(model, processor, **options)
    batch = packed.collate(records)
    if "packed" not in REGISTRY[family].spec.layouts:  # plain only: asking for packed falls back to plain
        assert not packed.shared_prefix and batch.layout == "plain" and batch.blocks.num_rows == 8
    else:
        assert batch.layout == "packed" and batch.num_pairs == 4
        assert batch.blocks.num_rows == (1 if variant in ("one row", "materialised head") else 4)
    a, grads_a = _run(plain, model, records)
    b, grads_b = _run(packed, model, records)
    _assert_same(a, b, grads_a, grads_b)


@needs_images
@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_packed_path_with_gradient_checkpointing_and_lora(family):
    """The layout reaches the attention layers again when checkpointing recomputes them in the backward."""
    from peft import LoraConfig, get_peft_model

    model, processor = tiny(family)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    model.base_model.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    model.train()
    records = _records(text_only=False)
    a, grads_a = _run(get_adapter(model, processor, shared_prefix=False), model, records)
    b, grads_b = _run(get_adapter(model, processor), model, records)
    assert any("lora" in name for name in grads_a)
    _assert_same(a, b, grads_a, grads_b)


def test_layout_plan_and_masks():
    layout = plan([(3, (2, 1)), (2, (1, 2)), (1, (1, 1))], max_row_tokens=11)
    assert [b.row for b in layout.blocks] == [0, 0, 1] and [b.offset for b in layout.blocks] == [0, 6, 0]
    assert layout.width == 11 and layout.tokens == 14
    assert plan([(3, (2, 1)), (2, (1, 2))]).num_rows == 1  # no budget: one row
    assert plan([(3, (2, 1)), (2, (1, 2))], max_row_tokens=0).num_rows == 2  # one pair a row
    seg = layout.segments()
    assert seg[0].tolist() == [PROMPT] * 3 + [CHOSEN] * 2 + [REJECTED] + [PROMPT] * 2 + [CHOSEN] + [REJECTED] * 2
    assert seg[1].tolist() == [PROMPT, CHOSEN, REJECTED] + [PAD] * 8
    assert layout.positions()[0].tolist() == [0, 1, 2, 3, 4, 3, 0, 1, 2, 2, 3]
    allowed = attention_allowed(layout)[0, 0]
    assert allowed[5, [0, 1, 2, 5]].all() and not allowed[5, [3, 4]].any()  # rejected: its prompt and itself
    assert not allowed[6:, :6].any()  # the second pair never sees the first
    assert allowed[10, [6, 7, 9, 10]].all() and not allowed[10, 8]
    assert attention_allowed(layout)[1, 0, 10, 10]  # a padding column sees itself only (no empty softmax)
    scored = layout.scored()
    # pair 0: chosen tokens at 3, 4 predicted by 2, 3; rejected token at 5 predicted by the last prompt column 2
    assert scored.columns[:3].tolist() == [3, 4, 5] and scored.predictors[:3].tolist() == [2, 3, 2]
    assert scored.predictors[3:6].tolist() == [7, 7, 9] and scored.rows[-2:].tolist() == [1, 1]
    assert [b.offset for b in layout.resized([5, 2, 4]).blocks] == [0, 8, 0]
    assert scored.items.tolist() == [0, 0, 0, 1, 1, 1, 2, 2] and scored.slots.tolist() == [0, 0, 1, 0, 1, 1, 0, 1]


def test_one_row_has_no_padding_and_runs_attention_per_pair(monkeypatch):
    """Four pairs are one row with zero padding; attention goes through the per-pair function, which never
    sees a T×T mask; the LM head only projects scored positions."""
    import mm_unidpo.models.attention as attention

    model, processor = tiny("causal_lm")
    adapter = get_adapter(model, processor)
    batch = adapter.collate(_records(text_only=True))
    assert batch.blocks.num_rows == 1 and (batch.segments != PAD).all()
    calls, head_rows = [], []
    real = attention.packed_attention_forward

    def spy(module, q, k, v, mask, **kwargs):
        calls.append((kwargs.get("packed_layout") is batch.blocks, None if mask is None else tuple(mask.shape)))
        return real(module, q, k, v, mask, **kwargs)

    monkeypatch.setattr(attention, "packed_attention_forward", spy)
    from transformers import AttentionInterface

    AttentionInterface.register(PACKED_ATTENTION, spy)
    try:
        import mm_unidpo.models.head as head

        real_logps = head._ChunkedTokenLogps.forward

        def count(ctx, hidden, *rest):
            head_rows.append(hidden.shape[0])
            return real_logps(ctx, hidden, *rest)

        monkeypatch.setattr(head._ChunkedTokenLogps, "forward", staticmethod(count))
        out = adapter.sequence_logps(model, batch)
    finally:
        AttentionInterface.register(PACKED_ATTENTION, real)
    assert calls and all(own and shape == (1, 1, batch.blocks.width, 0) for own, shape in calls)
    assert head_rows == [int(out.chosen_lengths.sum() + out.rejected_lengths.sum())]


def test_plain_sdpa_on_a_packed_row_fails_loudly():
    """Should a layer run plain sdpa on a packed row (the layout lost), the placeholder mask errors instead of
    attending causally across pairs."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from mm_unidpo.models.attention import packed_mask_placeholder

    layout = plan([(3, (2, 2)), (2, (2, 1))])
    q = torch.randn(1, 2, layout.width, 4)
    module = torch.nn.Module()
    module.is_causal = True
    with pytest.raises(RuntimeError):
        sdpa_attention_forward(module, q, q, q, packed_mask_placeholder(layout, "cpu"))


@pytest.mark.parametrize("family", ["causal_lm", "llava"])
def test_plain_layout_projects_only_scored_positions(family):
    model, processor = tiny(family)
    adapter = get_adapter(model, processor, shared_prefix=False)
    records = _records(text_only=True)[:2] if family == "causal_lm" else [
        PreferenceRecord("<image>\nWhat is this?", "A red circle.", "A square.", images=[_square()]),
        PreferenceRecord("<image>\nDescribe it in one short sentence, please.", "Red.", "A blue star on grass.",
                         images=[_square()])]
    batch = adapter.collate(records)
    seen = {}
    handle = model.register_forward_hook(lambda m, a, k, out: seen.update(shape=tuple(out.logits.shape)), with_kwargs=True)
    out = adapter.sequence_logps(model, batch)
    handle.remove()
    # the model returned one log-prob per scored token: no vocabulary-wide logits at all
    assert seen["shape"] == (int(out.chosen_lengths.sum() + out.rejected_lengths.sum()),)


def _square():
    from PIL import Image

    return Image.new("RGB", (40, 30), (200, 30, 30))


@needs_images
def test_training_curves_match_between_fast_and_plain_paths(tmp_path):
    model, processor = tiny("llava")
    model.save_pretrained(tmp_path / "llava")
    processor.save_pretrained(tmp_path / "llava")
    with open(tmp_path / "data.jsonl", "w") as f:
        for i, r in enumerate(_records(text_only=False)[:3] * 4):
            f.write(json.dumps({"id": f"r{i}", "prompt": r.prompt, "chosen": r.chosen, "rejected": r.rejected,
                                "images": r.images, "score_chosen": 7.0, "score_rejected": 3.0}) + "\n")
    curves = packed_and_plain_training_curves(tmp_path, tmp_path / "llava", loss="unidpo", max_steps=6)
    assert len(curves[True]) == 6
    torch.testing.assert_close(torch.tensor(curves[True]), torch.tensor(curves[False]), rtol=1e-3, atol=1e-4)


def _varlen_emulation(module, query, key, value, attention_mask, *, cu_seq_lens_q=None, scaling=None, **kwargs):
    """What flash-attention's varlen kernel computes from transformers' FlashAttentionKwargs: causal
    attention within each [cu[i], cu[i+1]) span, no mask. (No flash kernel on this machine.)"""
    assert attention_mask is None and cu_seq_lens_q is not None
    cu = cu_seq_lens_q.tolist()
    parts = [torch.nn.functional.scaled_dot_product_attention(
        query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], is_causal=True, scale=scaling,
        enable_gqa=query.shape[1] != key.shape[1]) for a, b in zip(cu, cu[1:])]
    return torch.cat(parts, dim=2).transpose(1, 2).contiguous(), None


@needs_images
@pytest.mark.parametrize("family", ["causal_lm", "llava", "llava_next", "llava_onevision", "idefics3", "smolvlm",
                                    "internvl"])
def test_varlen_inputs_for_flash_kernels_equal_the_plain_path(family):
    """Under flash attention the plain layout goes padding-free: the 2B sequences in one row with restarted
    positions and cu_seq_lens. Run through a kernel that honours exactly those inputs, it gives the padded
    plain layout's log-probs and gradients."""
    from transformers import AttentionInterface, AttentionMaskInterface

    AttentionInterface.register("varlen_emulation", _varlen_emulation)
    AttentionMaskInterface.register("varlen_emulation", lambda *args, **kwargs: None)
    model, processor = tiny(family)
    records = _records(text_only=family == "causal_lm")
    a, grads_a = _run(get_adapter(model, processor, shared_prefix=False), model, records)
    adapter = get_adapter(model, processor, shared_prefix=False, varlen=True)
    batch = adapter.collate(records)
    assert batch.layout == "varlen" and batch.input_ids.shape[0] == 1
    flash = LAYOUTS["varlen"].attention_inputs(model, batch.blocks, device="cpu")
    cu_seq_lens = flash["cu_seq_lens_q"]
    lengths = [len(e.prompt_ids) + len(x) for e in map(adapter.encode, records) for x in [e.chosen_ids]] + \
              [len(e.prompt_ids) + len(e.rejected_ids) for e in map(adapter.encode, records)]
    assert cu_seq_lens.tolist() == [sum(lengths[:i]) for i in range(len(lengths) + 1)]
    assert flash["max_length_q"] == max(lengths) and batch.input_ids.shape[1] == sum(lengths)  # no padding
    starts = cu_seq_lens[:-1].long()
    assert (batch.position_ids[0, starts] == 0).all() and cu_seq_lens.dtype == torch.int32
    text = model.config.get_text_config()
    saved, text._attn_implementation = text._attn_implementation, "varlen_emulation"
    try:
        b, grads_b = _run(adapter, model, records)
    finally:
        text._attn_implementation = saved
    _assert_same(a, b, grads_a, grads_b)


def test_flash_attention_picks_the_varlen_layout_where_positions_are_1d():
    for family, expected in (("llava", True), ("qwen2_vl", False)):
        model, processor = tiny(family)
        model.config._attn_implementation = "flash_attention_2"  # the adapter's choice only: nothing is run
        model.config.get_text_config()._attn_implementation = "flash_attention_2"
        adapter = get_adapter(model, processor)
        assert not adapter.shared_prefix and adapter.varlen is expected


PLAIN_ONLY = [f for f in available_families() if "packed" not in REGISTRY[f].spec.layouts]


@needs_images
@pytest.mark.parametrize("family", PLAIN_ONLY)
def test_plain_only_families_would_be_wrong_packed(family, monkeypatch):
    """Why these families declare the plain layout only: forced into the packed one (its per-pair causal
    attention), they give other log-probs (Gemma-3: bidirectional image blocks and sliding windows; Qwen3.5:
    the linear-attention state runs on along the row) or refuse it (Mllama: its images are per row). Asking
    for packed gives plain."""
    import dataclasses

    model, processor = tiny(family)
    model.eval()
    records = _records(text_only=False)
    plain = get_adapter(model, processor, shared_prefix=False)
    asked = get_adapter(model, processor, shared_prefix=True)
    assert asked.layout == "plain" and not asked.shared_prefix
    monkeypatch.setattr(REGISTRY[family], "spec", dataclasses.replace(REGISTRY[family].spec, layouts=("plain", "packed")))
    forced = get_adapter(model, processor)
    assert forced.layout == "packed"
    with torch.no_grad():
        a = plain.sequence_logps(model, plain.collate(records))
        try:
            b = forced.sequence_logps(model, forced.collate(records))
        except ValueError as error:  # refused outright (mllama: its images are per row) is fine too
            assert "plain" in str(error)
            return
    worst = max((a.chosen_logps - b.chosen_logps).abs().max(), (a.rejected_logps - b.rejected_logps).abs().max())
    assert worst > 1e-3, f"{family}: packed equals plain here ({worst:.2e}); the declaration may be too strict"


@needs_images
@pytest.mark.parametrize("family", [f for f in ("idefics3", "gemma4", "mllama") if f in available_families()])
def test_training_from_a_saved_checkpoint(tmp_path, family):
    """LoRA training loads a saved checkpoint through the family (its loader where it has one), and the
    default layout's curve equals the plain one's: idefics3 packs; gemma4 and mllama (forwards per image
    count) are plain either way."""
    model, processor = tiny(family)
    model.save_pretrained(tmp_path / family)
    processor.save_pretrained(tmp_path / family)
    with open(tmp_path / "data.jsonl", "w") as f:
        for i, r in enumerate(_records(text_only=False)[:3] * 2):
            f.write(json.dumps({"id": f"r{i}", "prompt": r.prompt, "chosen": r.chosen, "rejected": r.rejected,
                                "images": r.images, "score_chosen": 7.0, "score_rejected": 3.0}) + "\n")
    curves = packed_and_plain_training_curves(tmp_path, tmp_path / family, loss="unidpo", max_steps=2)
    assert len(curves[True]) == 2
    torch.testing.assert_close(torch.tensor(curves[True]), torch.tensor(curves[False]), rtol=1e-3, atol=1e-4)
