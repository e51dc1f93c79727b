"""The original-LLaVA adapter (llava-torch `LlavaLlamaForCausalLM`, family "llava_orig") beyond the
contract checked for every family in test_models_adapters.py: conversation-template rendering, the
spliced (expanded) sequence and LLaVA's own re-padding / truncation, and loading a saved checkpoint."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
import torch

from mm_unidpo.data import BadRecordError, PreferenceRecord
from mm_unidpo.models import get_adapter
from mm_unidpo.testing import available_families, tiny


from .helpers import ATOL, IMAGES, LAYOUTS, RTOL, logps, make_adapter, naive_logp, need_images
from .helpers import one_thread  # noqa: F401  (an autouse fixture: importing it applies it to this module)
from .helpers import packed_and_plain_training_curves

pytestmark = pytest.mark.skipif("llava_orig" not in available_families(), reason="llava-torch is not installed")


@pytest.fixture(scope="module")
def built():
    model, processor = tiny("llava_orig", seed=0)
    return model.eval(), processor


def _record(question="What is shown in this image?", chosen="A rocket on the launch pad.", rejected="A horse.",
            images=("rocket.jpg",), **kw):
    need_images(*images)
    return PreferenceRecord(prompt="<image>\n" * len(images) + question, chosen=chosen, rejected=rejected,
                            images=[str(IMAGES / n) for n in images], **kw)


def _conversation(turns, system=None):
    from llava.conversation import conv_templates

    conv = conv_templates["vicuna_v1"].copy()
    if system is not None:
        conv.system = system
    for i, text in enumerate(turns):
        conv.append_message(conv.roles[i % 2], text)
    return conv.get_prompt()


def test_renders_with_the_original_conversation_template(built):
    model, processor = built
    adapter = get_adapter(model, processor)
    assert adapter.family == "llava_orig" and adapter.conv_mode == "vicuna_v1"
    prompt, chosen, rejected = adapter.render_pair(_record())
    assert prompt == _conversation(["<image>\nWhat is shown in this image?", None])
    assert prompt + chosen == _conversation(["<image>\nWhat is shown in this image?", "A rocket on the launch pad."])
    assert chosen == " A rocket on the launch pad.</s>" and rejected == " A horse.</s>"

    # chat messages: a system prompt, a past exchange, image parts placed as LLaVA does ("<image>\n" first)
    messages = [{"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]},
                {"role": "assistant", "content": "A rocket."},
                {"role": "user", "content": [{"type": "text", "text": "And the color?"}]}]
    record = PreferenceRecord(prompt=messages, chosen="White.", rejected="Green.", images=[str(IMAGES / "rocket.jpg")])
    prompt, chosen, _ = adapter.render_pair(record)
    assert prompt == _conversation(["<image>\nWhat is it?", "A rocket.", "And the color?", None],
                                   system="You are a helpful assistant.")
    assert chosen == " White.</s>"
    # the tiny tokenizer's chat template reproduces the same text
    assert prompt == processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    need_images("rocket.jpg")
    with torch.no_grad():
        out = adapter.sequence_logps(model, adapter.collate([record]))
    assert torch.isfinite(out.chosen_logps).all()


def test_conversations_llava_cannot_hold_are_bad_records(built):
    model, processor = built
    adapter = get_adapter(model, processor)
    two_users = [{"role": "user", "content": "Hi."}, {"role": "user", "content": "What is it?"}]
    with pytest.raises(BadRecordError, match=r"record 5 \(id='u2'\): bad_prompt: message 1 has role 'user'"):
        adapter.encode(PreferenceRecord(prompt=two_users, chosen="A.", rejected="B.", id="u2", index=5))
    ends_with_assistant = [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello."}]
    with pytest.raises(BadRecordError, match="bad_prompt: the prompt must end with a user turn"):
        adapter.encode(PreferenceRecord(prompt=ends_with_assistant, chosen="A.", rejected="B."))
    with pytest.raises(BadRecordError, match=r"record 6 \(id='r'\): placeholder_mismatch: the rejected response"):
        adapter.encode(_record(rejected="See <image> here.", id="r", index=6))


def test_prompt_length_counts_every_image_feature(built):
    """One -200 id is num_image_tokens positions: a max_length that only fits the unexpanded ids is too short."""
    model, processor = built
    adapter = get_adapter(model, processor)
    assert adapter.num_image_tokens == processor.num_image_tokens == 16
    record = _record(images=("rocket.jpg", "camera.png"), id="two", index=1)
    encoded = adapter.encode(record)
    assert encoded.prompt_ids.count(-200) == 2
    expanded = len(encoded.prompt_ids) + 2 * 15
    short = get_adapter(model, processor, max_length=len(encoded.prompt_ids) + 20)
    with pytest.raises(BadRecordError, match=rf"prompt_too_long: the prompt takes {expanded} tokens \(2 image"):
        short.encode(record)
    fits = get_adapter(model, processor, max_length=expanded + 2)
    batch = fits.collate([record])
    assert batch.num_truncated == 1 and (batch.input_ids[0] == -200).sum() == 2
    with torch.no_grad():
        out = fits.sequence_logps(model, batch)
    assert out.chosen_lengths.tolist() == [2]


@pytest.mark.parametrize("config_side", ["left", "right"])
def test_llava_repadding_side_does_not_change_results(built, config_side):
    """LLaVA strips our padding and re-pads on config.tokenizer_padding_side after splicing; positions and
    masks must follow, whichever side either of us pads on, in both layouts."""
    model, processor = built
    records = [_record(id="a"), _record("Describe the photo in detail. " * 5, "A cat. " * 6, "Nothing.",
                                        images=("chelsea.png",), id="b"),
               PreferenceRecord(prompt="How many people are there?", chosen="Two people.", rejected="None.", id="c")]
    saved = model.config.tokenizer_padding_side
    model.config.tokenizer_padding_side = config_side
    try:
        for layout in LAYOUTS:
            adapter = make_adapter(model, processor, layout)
            out = logps(adapter, model, records)
            for i, record in enumerate(records):
                encoded = adapter.encode(record)
                torch.testing.assert_close(out.chosen_logps[i].item(),
                                           naive_logp("llava_orig", model, encoded, encoded.chosen_ids),
                                           atol=ATOL, rtol=RTOL)
                torch.testing.assert_close(out.rejected_logps[i].item(),
                                           naive_logp("llava_orig", model, encoded, encoded.rejected_ids),
                                           atol=ATOL, rtol=RTOL)
    finally:
        model.config.tokenizer_padding_side = saved


@pytest.mark.parametrize("layout", ["plain-right", "packed"])
def test_max_length_is_capped_where_llava_would_cut(built, caplog, layout):
    model, processor = built
    limit = model.config.tokenizer_model_max_length
    with caplog.at_level(logging.WARNING, logger="mm_unidpo.models.families.llava_orig"):
        adapter = make_adapter(model, processor, layout, max_length=limit + 1000)
    assert adapter.max_length == limit and "tokenizer_model_max_length" in caplog.text
    # If LLaVA cuts anyway (a config changed behind the adapter's back), the forward refuses silently wrong sums.
    record = _record()
    batch = adapter.collate([record])
    assert batch.layout == ("packed" if layout == "packed" else "plain")
    model.config.tokenizer_model_max_length = len(adapter.encode(record).prompt_ids)  # < the expanded prompt
    try:
        with pytest.raises(RuntimeError, match="splicing (changed the number of response tokens|gave prompts)"):
            adapter.sequence_logps(model, batch)
    finally:
        model.config.tokenizer_model_max_length = limit


def test_im_start_end_and_unsupported_layouts(built):
    model, processor = built
    config = model.config
    config.mm_use_im_start_end = True
    try:
        prompt, _, _ = get_adapter(model, processor).render_pair(_record())
        assert "USER: <im_start><image><im_end>\nWhat is shown" in prompt
    finally:
        config.mm_use_im_start_end = False
    config.image_aspect_ratio = "anyres"
    try:
        with pytest.raises(NotImplementedError, match="anyres"):
            get_adapter(model, processor)
    finally:
        config.image_aspect_ratio = "pad"
    with pytest.raises(ValueError, match="unknown LLaVA conversation mode 'nope'"):
        get_adapter(model, processor, conv_mode="nope")


def test_load_saved_checkpoint(built, tmp_path):
    """A saved llava_llama checkpoint loads through load_pretrained (family from config.json) with LLaVA's own
    vision-tower loader and gives the same log-probs."""
    from mm_unidpo.models.loading import detect_family, load_pretrained

    model, processor = built
    model.save_pretrained(tmp_path)  # safetensors
    processor.tokenizer.save_pretrained(tmp_path)
    assert detect_family(str(tmp_path)) == "llava_orig"
    loaded, loaded_processor = load_pretrained(str(tmp_path), dtype="float32")
    loaded.eval()
    assert type(loaded).__name__ == "LlavaLlamaForCausalLM" and loaded.get_vision_tower().is_loaded
    assert loaded_processor.conv_mode == "vicuna_v1" and loaded_processor.num_image_tokens == 16
    records = [_record(id="a"), _record(images=("horse.png",), id="b")]
    a = logps(get_adapter(model, processor), model, records)
    b = logps(get_adapter(loaded, loaded_processor), loaded, records)
    torch.testing.assert_close(a.chosen_logps, b.chosen_logps, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(a.rejected_logps, b.rejected_logps, atol=ATOL, rtol=RTOL)
    loaded_processor.save_pretrained(tmp_path / "processor")
    assert (tmp_path / "processor" / "preprocessor_config.json").is_file()


def test_models_package_does_not_import_llava():
    code = ("import sys; import mm_unidpo.models; from mm_unidpo.models import FAMILIES; "
            "assert 'llava_orig' in FAMILIES; assert 'llava' not in sys.modules, 'llava imported'")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=120)


def test_packed_and_plain_layouts_give_the_same_gradients(built):
    """The shared-prefix path (prompts spliced once per pair) equals the plain two-row path, gradients included
    (the projector's too: image features are spliced in both)."""
    import copy

    model, processor = built
    model = copy.deepcopy(model)
    records = [_record(id="a"), _record("Describe it.", "A cat on a sofa.", "A dog sleeping on a red sofa.",
                                        images=("chelsea.png",), id="b"),
               PreferenceRecord(prompt="How many people are there?", chosen="Two people.", rejected="None.", id="c")]

    def run(layout):
        model.zero_grad(set_to_none=True)
        adapter = make_adapter(model, processor, layout)
        out = adapter.sequence_logps(model, adapter.collate(records))
        (out.chosen_logps.sum() - 0.5 * out.rejected_logps.sum()).backward()
        return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain, grads_plain = run("plain-left")
    packed, grads_packed = run("packed")
    torch.testing.assert_close(packed.chosen_logps, plain.chosen_logps, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(packed.rejected_logps, plain.rejected_logps, atol=ATOL, rtol=RTOL)
    assert grads_plain.keys() == grads_packed.keys() and any("mm_projector" in n for n in grads_plain)
    for name, grad in grads_plain.items():
        torch.testing.assert_close(grads_packed[name], grad, rtol=1e-3, atol=1e-5, msg=name)


def test_training_runs_on_a_saved_checkpoint_in_both_layouts(built, tmp_path):
    """End to end: load_pretrained -> LoRA -> trainer, with the packed and the plain layout giving the same curve."""
    import json

    need_images("astronaut.png", "chelsea.png")
    model, processor = built
    model.save_pretrained(tmp_path / "model")
    processor.tokenizer.save_pretrained(tmp_path / "model")
    rows = [("<image>\nWhat is in the image?", "An astronaut in a white suit.", "A horse.", "astronaut.png"),
            ("<image>\nDescribe it.", "A cat.", "A dog sleeping on a red sofa next to a window.", "chelsea.png")]
    with open(tmp_path / "data.jsonl", "w") as f:
        for i in range(4):
            prompt, chosen, rejected, image = rows[i % 2]
            f.write(json.dumps({"id": f"r{i}", "prompt": prompt, "chosen": chosen, "rejected": rejected,
                                "images": [image]}) + "\n")
    curves = packed_and_plain_training_curves(tmp_path, tmp_path / "model", loss="dpo", max_steps=3)
    assert len(curves[True]) == 3 and curves[True][-1] < curves[True][0]
    torch.testing.assert_close(torch.tensor(curves[True]), torch.tensor(curves[False]), rtol=1e-3, atol=1e-4)


def test_cache_keyword_compat_renames_and_restores():
    """transformers >= 5.24 hands the KV cache to forward as `cache=`; llava-torch's forward takes only
    `past_key_values`. Inside the context the instance forward takes `cache` (passed on under the old
    name, signature otherwise kept for generate's kwarg validation); afterwards the class forward is back."""
    import inspect

    from mm_unidpo.models.families.llava_orig import cache_keyword_compat

    class Old(torch.nn.Module):
        def forward(self, input_ids=None, attention_mask=None, past_key_values=None):
            return past_key_values

    class New(torch.nn.Module):
        def forward(self, input_ids=None, cache=None):
            return cache

    old, new = Old(), New()
    with cache_keyword_compat(old):
        assert old(input_ids=1, cache="kv") == "kv" and old(past_key_values="pkv") == "pkv"
        assert {"attention_mask", "past_key_values", "cache"} <= set(inspect.signature(old.forward).parameters)
    assert "forward" not in old.__dict__
    with pytest.raises(TypeError):
        old(cache="kv")
    with cache_keyword_compat(new):
        assert "forward" not in new.__dict__ and new(cache="kv") == "kv"
    hooked = Old()
    own = hooked.forward
    hooked.forward = own  # an instance-level forward, as accelerate's hooks install
    with cache_keyword_compat(hooked):
        assert hooked(cache="kv") == "kv"
    assert hooked.__dict__["forward"] is own
