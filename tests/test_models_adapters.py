"""The adapter contract, for every family `mm_unidpo.testing.available_families()` can build, in both
batch layouts: the plain one (2B rows, chosen then rejected, padded left or right) and the shared-prefix
packed one (one row per pair; families that do not support it must fall back to the plain layout).

The central check is against a naive reference (naive_logp in tests/helpers.py): each example alone,
unpadded, one plain forward of the model on that single sequence and a hand-written gather (logits[t]
predicts token t+1, log-softmax, sum over the response positions). The batched adapter result must
equal it. The rest: padding invariance (left / right, next to much longer rows), the image conditions
the result, chosen/rejected symmetry, gradients (also through LoRA), real photos of odd sizes and
modes, truncation, bad records, end-of-turn tokens and labels, family detection.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import types

import pytest
import torch

from mm_unidpo.data import BadRecordError, PreferenceRecord, load_preference_data, load_record_images
from mm_unidpo.models import FAMILIES as REGISTRY
from mm_unidpo.models import IGNORE_INDEX, get_adapter
from mm_unidpo.models.layouts import CHOSEN, PAD, PROMPT, REJECTED
from mm_unidpo.testing import available_families, tiny

from .helpers import ATOL, IMAGES, LAYOUTS, LLAVA_ORIG_IMAGE, RTOL, logps, make_adapter, naive_logp, need_images
from .helpers import one_thread  # noqa: F401  (an autouse fixture: importing it applies it to this module)

FAMILIES = available_families()
VLMS = [f for f in FAMILIES if f != "causal_lm"]


def response_tokens(batch, i: int, which: str) -> list[int]:
    """The scored token ids of pair i's chosen / rejected response, in either layout."""
    return batch.pair_tokens(i, CHOSEN if which == "chosen" else REJECTED)


def prompt_tokens(batch, i: int) -> list[int]:
    """Pair i's prompt token ids, in either layout."""
    return batch.pair_tokens(i, PROMPT)


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def zoo():
    """family -> (model, processor), each tiny model built once for this module, in eval mode."""
    cache: dict[str, tuple] = {}

    def get(family: str):
        if family not in cache:
            model, processor = tiny(family, seed=0)
            cache[family] = (model.eval(), processor)
        return cache[family]

    yield get
    cache.clear()


def rec(family: str, question: str, chosen: str, rejected: str, images=("astronaut.png",), *,
        id: str | None = None, index: int | None = None) -> PreferenceRecord:
    """A record; image placeholders first (LLaVA convention). Text-only for causal_lm."""
    images = [] if family == "causal_lm" else list(images)
    need_images(*images)
    return PreferenceRecord(prompt="<image>\n" * len(images) + question, chosen=chosen, rejected=rejected,
                            images=[str(IMAGES / name) for name in images], id=id, index=index)


def expanded_prompt_length(family: str, model, encoded) -> int:
    """Prompt positions the language model sees (llava_orig: each -200 id becomes one feature per patch of
    the model's vision tower), counted independently of the adapter."""
    n = len(encoded.prompt_ids)
    if family == "llava_orig":
        n += encoded.prompt_ids.count(LLAVA_ORIG_IMAGE) * (model.get_vision_tower().num_patches - 1)
    return n


# A batch with different images, lengths and one text-only record.
def base_records(family: str) -> list[PreferenceRecord]:
    return [
        rec(family, "What is shown in this image?", "An astronaut in a white space suit.", "A cat.",
            ("astronaut.png",), id="r0", index=0),
        rec(family, "Describe the photo in detail.",
            "A rocket is standing next to a person. The sun is setting in the west.",
            "A small boat sails on the calm water near the mountains.", ("rocket.jpg",), id="r1", index=1),
        rec(family, "How many people are in the picture?", "There are two people.", "Three.", (), id="r2",
            index=2),
    ]


def long_records(family: str) -> list[PreferenceRecord]:
    words = ("The quick brown fox jumps over the lazy dog. A picture is worth a thousand words. "
             "Let us think step by step. First, we count the objects. Then we compare their colors. ")
    return [
        rec(family, words * 4 + "What now?", words * 3, words * 2 + "No.", ("coffee.png",), id="long0"),
        rec(family, words * 3 + "And this?", words * 4, "Yes.", ("chelsea.png",), id="long1"),
    ]


# ------------------------------------------------------------------------------------ the reference
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("family", FAMILIES)
def test_batched_equals_naive_reference(zoo, family, layout):
    model, processor = zoo(family)
    adapter = make_adapter(model, processor, layout)
    records = base_records(family)
    out = logps(adapter, model, records)
    for i, record in enumerate(records):
        encoded = adapter.encode(record)
        chosen = naive_logp(family, model, encoded, encoded.chosen_ids)
        rejected = naive_logp(family, model, encoded, encoded.rejected_ids)
        torch.testing.assert_close(out.chosen_logps[i].item(), chosen, atol=ATOL, rtol=RTOL)
        torch.testing.assert_close(out.rejected_logps[i].item(), rejected, atol=ATOL, rtol=RTOL)
        assert out.chosen_lengths[i].item() == len(encoded.chosen_ids)
        assert out.rejected_lengths[i].item() == len(encoded.rejected_ids)
    assert out.chosen_logps.dtype == torch.float32 and torch.isfinite(out.chosen_logps).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_padding_invariance(zoo, family):
    """A pair's result is the same alone and next to much longer pairs, in every layout."""
    model, processor = zoo(family)
    target = base_records(family)[0]
    results = {}
    for layout in LAYOUTS:
        adapter = make_adapter(model, processor, layout)
        alone = logps(adapter, model, [target])
        longs = long_records(family)
        batch = adapter.collate([longs[0], target, longs[1]])
        assert batch.input_ids.shape[1] > 3 * len(prompt_tokens(batch, 1))  # much longer neighbours
        with torch.no_grad():
            mixed = adapter.sequence_logps(model, batch)
        results[layout] = (alone.chosen_logps[0], alone.rejected_logps[0])
        results[layout + " +long"] = (mixed.chosen_logps[1], mixed.rejected_logps[1])
    reference = results["plain-right"]
    for key, (chosen, rejected) in results.items():
        torch.testing.assert_close(chosen, reference[0], atol=ATOL, rtol=RTOL, msg=f"{family} {key}")
        torch.testing.assert_close(rejected, reference[1], atol=ATOL, rtol=RTOL, msg=f"{family} {key}")


@pytest.mark.parametrize("family", VLMS)
def test_image_conditions_the_result(zoo, family):
    model, processor = zoo(family)
    adapter = get_adapter(model, processor)
    a = logps(adapter, model, [rec(family, "What is this?", "A cat on a sofa.", "A dog.", ("astronaut.png",))])
    b = logps(adapter, model, [rec(family, "What is this?", "A cat on a sofa.", "A dog.", ("chelsea.png",))])
    assert abs(a.chosen_logps.item() - b.chosen_logps.item()) > 1e-3
    assert a.chosen_lengths.item() == b.chosen_lengths.item()


@pytest.mark.parametrize("family", FAMILIES)
def test_swapping_chosen_and_rejected_swaps_outputs(zoo, family):
    model, processor = zoo(family)
    adapter = get_adapter(model, processor)
    records = base_records(family)[:2]
    swapped = [PreferenceRecord(prompt=r.prompt, chosen=r.rejected, rejected=r.chosen, images=r.images, id=r.id)
               for r in records]
    a, b = logps(adapter, model, records), logps(adapter, model, swapped)
    torch.testing.assert_close(a.chosen_logps, b.rejected_logps, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(a.rejected_logps, b.chosen_logps, atol=ATOL, rtol=RTOL)
    assert torch.equal(a.chosen_lengths, b.rejected_lengths) and torch.equal(a.rejected_lengths, b.chosen_lengths)


# --------------------------------------------------------------------------------------- gradients
PROJECTORS = {"llava": "multi_modal_projector", "llava_next": "multi_modal_projector",
              "llava_onevision": "multi_modal_projector", "qwen2_vl": "visual.merger",
              "qwen2_5_vl": "visual.merger", "qwen3_vl": "visual.merger", "llava_orig": "mm_projector",
              "gemma3": "multi_modal_projector", "idefics3": "connector", "smolvlm": "connector",
              "internvl": "multi_modal_projector", "qwen3_5": "visual.merger",
              "glm4v": "visual.merger", "qwen3_vl_moe": "visual.merger", "qwen3_5_moe": "visual.merger",
              "glm4v_moe": "visual.merger", "mllama": "multi_modal_projector",
              "gemma4": "embed_vision"}


def _language_q_proj(model):
    """The q_proj weight of the language model's first attention layer (not of the vision tower; Qwen3.5's
    first layers are linear-attention ones, without it)."""
    for name, param in model.named_parameters():
        if re.search(r"layers\.\d+\.self_attn\.q_proj", name) and "vision" not in name and "visual" not in name:
            return name, param
    raise AssertionError("no language-model q_proj found")


@pytest.mark.parametrize("layout", ["plain-right", "packed"])
@pytest.mark.parametrize("family", FAMILIES)
def test_gradients_reach_the_language_model_and_lora(zoo, family, layout):
    from peft import LoraConfig, get_peft_model

    model, processor = zoo(family)
    model = copy.deepcopy(model)  # the module's model stays untouched
    adapter = make_adapter(model, processor, layout)
    batch = adapter.collate(base_records(family)[:2])
    out = adapter.sequence_logps(model, batch)
    (out.rejected_logps - out.chosen_logps).sum().backward()
    name, q = _language_q_proj(model)
    assert q.grad is not None and q.grad.abs().sum() > 0, name
    head = model.get_output_embeddings().weight
    assert head.grad is not None and head.grad.abs().sum() > 0
    if family in PROJECTORS:  # the image path is differentiable up to the projector
        grads = [p.grad for n, p in model.named_parameters() if PROJECTORS[family] in n]
        assert grads and any(g is not None and g.abs().sum() > 0 for g in grads)
    plain = (out.chosen_logps.detach(), out.rejected_logps.detach())

    model.zero_grad(set_to_none=True)
    # Gemma-4's vision tower has q_proj / v_proj too, of a kind LoRA cannot wrap (training targets the language
    # model's layers by name, train/setup.py): keep LoRA off it here
    exclude = r".*vision_tower.*" if family == "gemma4" else None
    peft_model = get_peft_model(model, LoraConfig(target_modules=["q_proj", "v_proj"], r=4, exclude_modules=exclude))
    wrapped = make_adapter(peft_model, processor, layout)
    assert wrapped.family == family and type(wrapped.hooks) is REGISTRY[family]
    assert get_adapter(peft_model, processor).family == family
    out = wrapped.sequence_logps(peft_model, wrapped.collate(base_records(family)[:2]))
    # LoRA B starts at zero: the wrapped model computes the same thing.
    torch.testing.assert_close(out.chosen_logps.detach(), plain[0], atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(out.rejected_logps.detach(), plain[1], atol=ATOL, rtol=RTOL)
    (out.rejected_logps - out.chosen_logps).sum().backward()
    layer = re.search(r"layers\.\d+\.self_attn", name).group(0)
    lora = [(n, p) for n, p in peft_model.named_parameters() if "lora_B" in n and layer in n
            and "vision" not in n and "visual" not in n]
    assert lora and all(p.grad is not None and p.grad.abs().sum() > 0 for _, p in lora), [n for n, _ in lora]
    assert all(p.grad is None for n, p in peft_model.named_parameters() if "lora" not in n)


def gradients_against_naive(model, adapter, family, records):
    """(adapter, naive) gradients of sum(chosen) - 0.5 sum(rejected) w.r.t. every trainable parameter: the
    batched adapter's, and the naive one-example forwards' (tests/helpers.py), None as zeros."""
    params = [p for p in model.parameters() if p.requires_grad]
    out = adapter.sequence_logps(model, adapter.collate(records))
    ours = torch.autograd.grad(out.chosen_logps.sum() - 0.5 * out.rejected_logps.sum(), params, allow_unused=True)
    total = 0.0
    for record in records:
        encoded = adapter.encode(record)
        total = total + naive_logp(family, model, encoded, encoded.chosen_ids, differentiable=True)
        total = total - 0.5 * naive_logp(family, model, encoded, encoded.rejected_ids, differentiable=True)
    theirs = torch.autograd.grad(total, params, allow_unused=True)
    zeros = [torch.zeros_like(p) for p in params]
    return ([g if g is not None else z for g, z in zip(ours, zeros)],
            [g.to(p.dtype) if g is not None else z for g, p, z in zip(theirs, params, zeros)])


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("family", FAMILIES)
def test_gradients_equal_naive_reference(zoo, family, layout):
    """Every parameter's gradient through the batched adapter equals the one through each example's naive
    plain forward (the processor's own rendering, every extra input passed through): the same computation,
    not just the same values."""
    model, processor = zoo(family)
    ours, theirs = gradients_against_naive(model, make_adapter(model, processor, layout), family,
                                           base_records(family))
    assert any(g.abs().sum() > 0 for g in theirs)
    for (name, _), a, b in zip([(n, p) for n, p in model.named_parameters() if p.requires_grad], ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5, msg=f"{family} {layout} {name}")


@pytest.mark.parametrize("layout", ["plain-left", "packed"])
@pytest.mark.parametrize("family", VLMS)
def test_text_only_records_in_a_vlm(zoo, family, layout):
    """A text-only record gives the same result in a text-only batch and next to records with images."""
    model, processor = zoo(family)
    adapter = make_adapter(model, processor, layout)
    records = base_records(family)
    text_only = records[2]
    assert not text_only.images
    alone = logps(adapter, model, [text_only])
    mixed = logps(adapter, model, [records[0], text_only, records[1]])
    encoded = adapter.encode(text_only)
    torch.testing.assert_close(alone.chosen_logps.item(), naive_logp(family, model, encoded, encoded.chosen_ids),
                               atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(mixed.chosen_logps[1], alone.chosen_logps[0], atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(mixed.rejected_logps[1], alone.rejected_logps[0], atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("family", FAMILIES)
def test_bfloat16_and_eager_attention(zoo, family):
    """A bf16 model (pixel values cast where the family needs it), eager attention (the packed path's additive
    mask in the compute dtype): both layouts run and stay close to the float32 result."""
    model, processor = zoo(family)
    records = base_records(family)
    reference = logps(get_adapter(model, processor), model, records)
    low = copy.deepcopy(model).to(torch.bfloat16)
    low.set_attn_implementation("eager")
    for layout in ("plain-left", "packed"):
        out = logps(make_adapter(low, processor, layout), low, records)
        assert out.chosen_logps.dtype == torch.float32
        torch.testing.assert_close(out.chosen_logps, reference.chosen_logps, atol=0.05, rtol=0.01)
        torch.testing.assert_close(out.rejected_logps, reference.rejected_logps, atol=0.05, rtol=0.01)


# ------------------------------------------------------------------------------------- real photos
@pytest.mark.parametrize("layout", ["plain-left", "packed"])
@pytest.mark.parametrize("family", VLMS)
def test_real_photos_of_odd_sizes_and_modes(zoo, family, layout):
    """Every photo (L, RGBA, non-square, JPEG) in one batch, and a record with two images."""
    model, processor = zoo(family)
    adapter = make_adapter(model, processor, layout)
    two = rec(family, "Compare the two pictures.", "The left one is larger.", "They are the same.",
              ("camera.png", "horse.png"), id="two")
    records = [two] + [rec(family, "What is in the photo?", "A photo.", "Nothing at all.", (name,), id=name)
                       for name in ("astronaut.png", "camera.png", "chelsea.png", "coffee.png", "horse.png",
                                    "motorcycle_left.png", "rocket.jpg")]
    out = logps(adapter, model, records)
    assert out.chosen_logps.shape == (len(records),)
    assert torch.isfinite(out.chosen_logps).all() and torch.isfinite(out.rejected_logps).all()
    alone = logps(adapter, model, [two])
    torch.testing.assert_close(out.chosen_logps[0], alone.chosen_logps[0], atol=ATOL, rtol=RTOL)
    # the two-image record matches the naive single-example reference too
    encoded = adapter.encode(two)
    torch.testing.assert_close(alone.chosen_logps[0].item(), naive_logp(family, model, encoded, encoded.chosen_ids),
                               atol=ATOL, rtol=RTOL)
    # and its second image matters
    one = rec(family, "Compare the two pictures.", "The left one is larger.", "They are the same.",
              ("camera.png", "rocket.jpg"))
    assert abs(logps(adapter, model, [one]).chosen_logps.item() - alone.chosen_logps.item()) > 1e-4


# --------------------------------------------------------------------------------------- truncation
def _image_positions(family, model, row_ids):
    if family == "llava_orig":
        return int((row_ids == LLAVA_ORIG_IMAGE).sum())
    return int((row_ids == model.config.image_token_id).sum())


@pytest.mark.parametrize("layout", ["plain-right", "packed"])
@pytest.mark.parametrize("family", FAMILIES)
def test_long_response_is_truncated_from_its_end(zoo, family, layout):
    model, processor = zoo(family)
    record = rec(family, "Describe the photo in detail.",
                 "There is a horse in a green field under a blue sky. The sun is setting in the west.", "No.",
                 ("horse.png",), id="long", index=4)
    probe = make_adapter(model, processor, layout)
    full = probe.encode(record)
    keep = 4
    assert len(full.chosen_ids) > keep >= len(full.rejected_ids)
    prompt_length = expanded_prompt_length(family, model, full)
    adapter = make_adapter(model, processor, layout, max_length=prompt_length + keep)
    batch = adapter.collate([record])
    assert batch.num_truncated == 1 and batch.truncated == [True]
    # the kept response is the start of the full one; the prompt (with every image token) is whole
    assert response_tokens(batch, 0, "chosen") == full.chosen_ids[:keep]
    assert response_tokens(batch, 0, "rejected") == full.rejected_ids
    assert prompt_tokens(batch, 0) == full.prompt_ids
    if family != "causal_lm":
        assert _image_positions(family, model, torch.tensor(prompt_tokens(batch, 0))) == _image_positions(
            family, model, torch.tensor(full.prompt_ids)) > 0
    with torch.no_grad():
        out = adapter.sequence_logps(model, batch)
    assert out.chosen_lengths.tolist() == [keep] and out.rejected_lengths.tolist() == [len(full.rejected_ids)]
    torch.testing.assert_close(out.chosen_logps.item(), naive_logp(family, model, full, full.chosen_ids[:keep]),
                               atol=ATOL, rtol=RTOL)
    # a response that just fits is not truncated, and not counted
    roomy = make_adapter(model, processor, layout, max_length=prompt_length + len(full.chosen_ids))
    assert roomy.collate([record]).truncated == [False]


@pytest.mark.parametrize("family", FAMILIES)
def test_prompt_too_long_is_a_bad_record(zoo, family):
    model, processor = zoo(family)
    long_prompt = "Let us think step by step. First, we count the objects. " * 6 + "What is it?"
    bad = rec(family, long_prompt, "A rocket.", "A horse.", ("rocket.jpg",), id="too-long", index=7)
    prompt_length = expanded_prompt_length(family, model, get_adapter(model, processor).encode(bad))
    adapter = get_adapter(model, processor, max_length=prompt_length)  # no room for one response token
    with pytest.raises(BadRecordError, match=r"record 7 \(id='too-long'\): prompt_too_long") as info:
        adapter.collate([bad])
    assert info.value.reason == "prompt_too_long" and info.value.index == 7 and info.value.record_id == "too-long"
    assert str(prompt_length) in str(info.value)

    goods = [rec(family, "What is it?", "A rocket.", "A horse.", ("rocket.jpg",), id=f"ok{i}", index=i)
             for i in (0, 2)]
    skipping = get_adapter(model, processor, max_length=prompt_length, on_bad_record="skip")
    batch = skipping.collate([goods[0], bad, goods[1]])
    assert batch.kept == [0, 2] and batch.ids == ["ok0", "ok2"] and batch.indices == [0, 2]
    assert batch.num_pairs == 2
    assert [e.reason for e in batch.skipped] == ["prompt_too_long"]
    assert "record 7 (id='too-long')" in str(batch.skipped[0])
    with torch.no_grad():
        assert torch.isfinite(skipping.sequence_logps(model, batch).chosen_logps).all()
    with pytest.raises(BadRecordError, match=r"empty_batch: .*record 7 \(id='too-long'\): prompt_too_long"):
        skipping.collate([bad])


# ------------------------------------------------------------------------------------- bad records
@pytest.mark.skipif("causal_lm" not in FAMILIES, reason="no causal_lm")
def test_images_for_a_text_only_model(zoo):
    need_images("rocket.jpg")
    model, tok = zoo("causal_lm")
    record = PreferenceRecord(prompt="<image>\nWhat is it?", chosen="A rocket.", rejected="A horse.",
                              images=[str(IMAGES / "rocket.jpg")], id="img", index=3)
    with pytest.raises(BadRecordError, match=r"record 3 \(id='img'\): images_for_text_model: 1 image"):
        get_adapter(model, tok).collate([record])
    skipping = get_adapter(model, tok, on_bad_record="skip")
    text = PreferenceRecord(prompt="What is it?", chosen="A rocket.", rejected="A horse.", id="txt", index=4)
    batch = skipping.collate([record, text])
    assert batch.kept == [1] and [e.reason for e in batch.skipped] == ["images_for_text_model"]


@pytest.mark.parametrize("family", VLMS)
def test_image_token_in_a_response_is_a_bad_record(zoo, family):
    """A response holding the model's image token would be taken for an image slot (the forward fails for the
    whole batch): it is a bad record at encode time, skippable."""
    model, processor = zoo(family)
    image_token = getattr(processor, "image_token", "<image>")
    bad = rec(family, "What is it?", "A rocket.", f"It shows {image_token} here.", ("rocket.jpg",), id="tok", index=2)
    with pytest.raises(BadRecordError, match=r"record 2 \(id='tok'\): placeholder_mismatch: the rejected response"):
        get_adapter(model, processor).collate([bad])
    skipping = get_adapter(model, processor, on_bad_record="skip")
    good = rec(family, "What is it?", "A rocket.", "A horse.", ("rocket.jpg",), id="ok", index=3)
    batch = skipping.collate([bad, good])
    assert batch.kept == [1] and [e.reason for e in batch.skipped] == ["placeholder_mismatch"]
    with torch.no_grad():
        assert torch.isfinite(skipping.sequence_logps(model, batch).chosen_logps).all()


@pytest.mark.skipif("causal_lm" not in FAMILIES, reason="no causal_lm")
def test_template_mismatch(zoo):
    """A chat template that renders the prompt differently once a response follows cannot be split."""
    model, tok = zoo("causal_lm")
    tok = copy.deepcopy(tok)
    tok.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}ASSISTANT>{% endif %}")
    record = PreferenceRecord(prompt="What is it?", chosen="A rocket.", rejected="A horse.", id="t", index=9)
    with pytest.raises(BadRecordError, match=r"record 9 \(id='t'\): template_mismatch"):
        get_adapter(model, tok).collate([record])


@pytest.mark.parametrize("family", VLMS)
def test_loading_a_file_with_bad_records_then_adapter_skips(zoo, family, tmp_path):
    """load_preference_data(on_bad_record="skip") counts each data-layer kind; the adapter then drops
    the record whose prompt does not fit and counts it separately."""
    need_images("rocket.jpg", "camera.png")
    (tmp_path / "images").mkdir()
    shutil.copy(IMAGES / "rocket.jpg", tmp_path / "images" / "rocket.jpg")
    shutil.copy(IMAGES / "camera.png", tmp_path / "images" / "camera.png")
    (tmp_path / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    long_prompt = "<image>\n" + "Let us think step by step. First, we count the objects. " * 8 + "Well?"
    rows = [
        {"id": "ok0", "prompt": "<image>\nWhat is this?", "chosen": "A rocket.", "rejected": "A horse.",
         "images": ["images/rocket.jpg"]},
        {"id": "missing", "prompt": "<image>\nWhat?", "chosen": "A.", "rejected": "B.", "images": ["images/no.png"]},
        {"id": "corrupt", "prompt": "<image>\nWhat?", "chosen": "A.", "rejected": "B.",
         "images": ["images/broken.png"]},
        {"id": "same", "prompt": "<image>\nWhat?", "chosen": "A.", "rejected": " A. ", "images": ["images/rocket.jpg"]},
        "{this is not json",
        {"id": "two-slots", "prompt": "<image> and <image>?", "chosen": "A.", "rejected": "B.",
         "images": ["images/rocket.jpg"]},
        {"id": "outside", "prompt": "<image>\nWhat?", "chosen": "A.", "rejected": "B.", "images": ["../../etc/passwd"]},
        {"id": "ok1", "prompt": "<image>\nWho is this?", "chosen": "A man with a camera.", "rejected": "A cat.",
         "images": ["images/camera.png"]},
        {"id": "long", "prompt": long_prompt, "chosen": "A rocket.", "rejected": "A horse.",
         "images": ["images/rocket.jpg"]},
        {"id": "empty", "prompt": "<image>\nWhat?", "chosen": "  ", "rejected": "B.", "images": ["images/rocket.jpg"]},
    ]
    path = tmp_path / "data.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    data = load_preference_data(path, on_bad_record="skip")
    assert [r.id for r in data] == ["ok0", "ok1", "long"]
    assert dict(data.skips.counts) == {"missing_image": 1, "corrupt_image": 1, "identical_responses": 1,
                                       "invalid_json": 1, "placeholder_mismatch": 1, "image_outside_root": 1,
                                       "empty_response": 1}
    where = {"missing_image": "record 1 (id='missing')", "corrupt_image": "record 2 (id='corrupt')",
             "identical_responses": "record 3 (id='same')", "invalid_json": "record 4 (id=None)",
             "placeholder_mismatch": "record 5 (id='two-slots')", "image_outside_root": "record 6 (id='outside')",
             "empty_response": "record 9 (id='empty')"}
    for reason, prefix in where.items():
        assert data.skips.examples[reason].startswith(f"{prefix}: {reason}: "), data.skips.examples[reason]

    model, processor = zoo(family)
    probe = get_adapter(model, processor)
    long_length = expanded_prompt_length(family, model, probe.encode(data[2]))
    adapter = get_adapter(model, processor, max_length=long_length, on_bad_record="skip")
    batch = adapter.collate(list(data))
    assert batch.kept == [0, 1] and batch.ids == ["ok0", "ok1"] and batch.indices == [0, 7]
    assert [e.reason for e in batch.skipped] == ["prompt_too_long"]
    assert "record 8 (id='long')" in str(batch.skipped[0])


# ------------------------------------------------------------------------- end of turn and labels
END_OF_TURN = {"causal_lm": "<|eot_id|>", "llava": "</s>", "llava_next": "</s>", "llava_onevision": "<|im_end|>",
               "qwen2_vl": "<|im_end|>", "qwen2_5_vl": "<|im_end|>", "qwen3_vl": "<|im_end|>", "llava_orig": "</s>",
               "gemma3": "<end_of_turn>", "idefics3": "<end_of_utterance>", "smolvlm": "<end_of_utterance>",
               "internvl": "<|im_end|>", "qwen3_5": "<|im_end|>", "glm4v": "<|endoftext|>",
               "qwen3_vl_moe": "<|im_end|>", "qwen3_5_moe": "<|im_end|>", "glm4v_moe": "<|endoftext|>", "mllama": "<|eot_id|>",
               "gemma4": "<end_of_turn>"}


@pytest.mark.parametrize("family", FAMILIES)
def test_responses_end_with_end_of_turn_and_only_they_are_scored_plain(zoo, family):
    model, processor = zoo(family)
    adapter = make_adapter(model, processor, "plain-left")
    records = base_records(family)
    batch = adapter.collate(records)
    tok = adapter.tokenizer
    for row in range(batch.input_ids.shape[0]):
        record = records[row % len(records)]
        response = record.chosen if row < len(records) else record.rejected
        labels, ids, mask = batch.labels[row], batch.input_ids[row], batch.attention_mask[row].bool()
        scored = (labels != IGNORE_INDEX).nonzero().flatten()
        # one contiguous span at the end of the real tokens, equal to the input there
        assert scored.tolist() == list(range(int(scored[0]), int(scored[-1]) + 1))
        assert int(scored[-1]) == int(mask.nonzero()[-1])
        assert torch.equal(labels[scored], ids[scored])
        assert (labels[~mask] == IGNORE_INDEX).all()
        if family != "causal_lm":  # image tokens are never scored
            image_id = LLAVA_ORIG_IMAGE if family == "llava_orig" else model.config.image_token_id
            assert (ids == image_id).any() == bool(record.images)
            assert (labels[ids == image_id] == IGNORE_INDEX).all()
        text = tok.decode(labels[scored].tolist())
        assert text.strip() == response + END_OF_TURN[family]
        assert int(labels[scored[-1]]) in adapter.end_token_ids
    with torch.no_grad():
        out = adapter.sequence_logps(model, batch)
    counts = (batch.labels != IGNORE_INDEX).sum(-1)
    assert torch.equal(torch.cat([out.chosen_lengths, out.rejected_lengths]), counts)


@pytest.mark.parametrize("family", [f for f in FAMILIES if "packed" in REGISTRY[f].spec.layouts])
def test_responses_end_with_end_of_turn_and_only_they_are_scored_packed(zoo, family):
    model, processor = zoo(family)
    adapter = make_adapter(model, processor, "packed")
    records = base_records(family)
    batch = adapter.collate(records)
    assert batch.layout == "packed" and batch.num_pairs == len(records)
    tok = adapter.tokenizer
    pair_of = batch.blocks.block_ids()  # one block per pair
    for i, record in enumerate(records):
        encoded = adapter.encode(record)
        mine = pair_of == i
        segments, ids = batch.segments[mine], batch.input_ids[mine]  # pair i's columns, in order
        assert prompt_tokens(batch, i) == encoded.prompt_ids == ids[segments == PROMPT].tolist()
        for which, span, response in (("chosen", CHOSEN, record.chosen), ("rejected", REJECTED, record.rejected)):
            scored = response_tokens(batch, i, which)
            assert ids[segments == span].tolist() == scored == getattr(encoded, f"{which}_ids")
            assert tok.decode(scored).strip() == response + END_OF_TURN[family]
            assert scored[-1] in adapter.end_token_ids
        if family != "causal_lm":  # image tokens only in the prompt
            image_id = LLAVA_ORIG_IMAGE if family == "llava_orig" else model.config.image_token_id
            assert ((ids == image_id) & (segments != PROMPT)).sum() == 0
            assert (ids == image_id).any() == bool(record.images)
    assert (batch.input_ids[batch.segments == PAD] == adapter.pad_token_id).all()
    assert batch.blocks.num_rows == 1 and (batch.segments != PAD).all()  # one row, no padding at all
    with torch.no_grad():
        out = adapter.sequence_logps(model, batch)
    assert out.chosen_lengths.tolist() == [len(response_tokens(batch, i, "chosen")) for i in range(len(records))]
    assert out.rejected_lengths.tolist() == [len(response_tokens(batch, i, "rejected")) for i in range(len(records))]


@pytest.mark.parametrize("family", FAMILIES)
def test_prompt_plus_response_is_the_whole_conversation_tokenized(zoo, family):
    """The response tokens are what tokenizing the rendered conversation in one go gives (no seam)."""
    model, processor = zoo(family)
    adapter = get_adapter(model, processor)
    record = base_records(family)[0]
    encoded = adapter.encode(record)
    prompt_text, chosen_text, _ = adapter.render_pair(record)
    full = prompt_text + chosen_text
    if family == "causal_lm":
        ids = processor(full, add_special_tokens=False)["input_ids"]  # the template writes BOS itself
    elif family == "llava_orig":
        from llava.mm_utils import tokenizer_image_token

        ids = tokenizer_image_token(full, processor.tokenizer)
    else:
        # as processor.apply_chat_template: no special tokens added to a rendering that starts with BOS
        ids = processor(text=[full], images=load_record_images(record), return_tensors="pt",
                        add_special_tokens=adapter.hooks.needs_special_tokens(full))["input_ids"][0].tolist()
    if ids != encoded.prompt_ids + encoded.chosen_ids:  # a template that closes no turn (GLM-4.1V): the end
        assert encoded.chosen_ids[-1] in adapter.end_token_ids  # token is the model's, after the rendered text
        ids = ids + encoded.chosen_ids[-1:]
    assert ids == encoded.prompt_ids + encoded.chosen_ids


# ----------------------------------------------------------------------------------- family detection
@pytest.mark.parametrize("family", FAMILIES)
def test_get_adapter_detects_each_family(zoo, family):
    model, processor = zoo(family)
    adapter = get_adapter(model, processor)
    assert adapter.family == family and type(adapter.hooks) is REGISTRY[family]
    assert family == "causal_lm" or REGISTRY[family].spec.matches(model)


def test_unknown_family_is_a_clear_error(zoo):
    class Mystery(torch.nn.Module):
        config = types.SimpleNamespace(model_type="mystery_vlm", vision_config=object())

        def get_output_embeddings(self):
            return None

    with pytest.raises(ValueError, match=r"no adapter for Mystery \(model_type='mystery_vlm'\); known families: "):
        get_adapter(Mystery(), processor=None)
    model, processor = zoo(FAMILIES[0])
    with pytest.raises(ValueError, match=r"unknown model family 'nope'; known: .*causal_lm"):
        get_adapter(model, processor, family="nope")
    with pytest.raises(ValueError, match="padding_side"):
        get_adapter(model, processor, padding_side="middle")


@pytest.mark.skipif("mllama" not in FAMILIES, reason="no mllama")
@pytest.mark.parametrize("photos", [("astronaut.png",), ("camera.png", "chelsea.png")])
def test_mllama_cross_attention_mask_is_the_processors_for_the_whole_conversation(zoo, photos):
    """Each response token's row of the cross-attention mask is what MllamaProcessor gives the rendered
    prompt + response (tokenized in one go), and a batch mixing image counts is computed in parts."""
    from mm_unidpo.models.logps import forward_inputs

    model, processor = zoo("mllama")
    adapter = make_adapter(model, processor, "plain-right")
    record = rec("mllama", "Compare them.", "The first one is larger.", "No.", photos)
    prompt_text, chosen_text, _ = adapter.render_pair(record)
    theirs = processor(text=[prompt_text + chosen_text], images=[load_record_images(record)], return_tensors="pt",
                       add_special_tokens=False)
    batch = adapter.collate([record])
    inputs, _ = forward_inputs(model, batch, adapter.hooks, adapter.forward_options)
    n = theirs["input_ids"].shape[1]
    assert batch.input_ids[0, :n].tolist() == theirs["input_ids"][0].tolist()
    assert torch.equal(inputs["cross_attention_mask"][0, :n], theirs["cross_attention_mask"][0])
    mixed = adapter.collate([record, base_records("mllama")[2]])  # with a text-only record
    assert len(adapter.hooks.forward_parts(mixed)) == 2


@pytest.mark.parametrize("family", FAMILIES)
def test_score_continuations_equal_naive_reference(zoo, family):
    """The prompt API (evaluation, judges): continuations sharing a prompt, prompts with and without an image
    in one call, each sum equal to the naive forward of its own sequence."""
    from mm_unidpo.data import Prompt

    model, processor = zoo(family)
    adapter = get_adapter(model, processor)
    photos = [] if family == "causal_lm" else [str(IMAGES / "rocket.jpg")]
    need_images("rocket.jpg")
    prompts = [adapter.encode_prompt(Prompt("<image>\nIs there a rocket?" if photos else "Is there a rocket?",
                                            images=photos)),
               adapter.encode_prompt(Prompt("Is the sky blue?"))]
    continuations = [[adapter.response_ids(p, answer) for answer in ("Yes.", "No, there is not.")] for p in prompts]
    sums, greedy = adapter.score_continuations(model, prompts, continuations, device="cpu")
    for i, prompt in enumerate(prompts):
        for k, ids in enumerate(continuations[i]):
            torch.testing.assert_close(sums[i, k].item(), naive_logp(family, model, prompt, ids), atol=ATOL, rtol=RTOL)
    assert greedy.dtype == torch.bool and greedy.shape == sums.shape
