"""The lmms-eval model class (mm_unidpo.evaluation.lmms.model) on tiny random-weight models, in process."""

from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("lmms_eval")

from lmms_eval.api.instance import Instance  # noqa: E402
from PIL import Image  # noqa: E402

from mm_unidpo.evaluation.lmms.model import MMUniDPO  # noqa: E402
from mm_unidpo.testing import available_families, tiny  # noqa: E402

EVAL_DATA = os.path.join(os.path.dirname(__file__), "..", "eval", "data", "images")
FAMILIES = [f for f in ("llava", "llava_next", "llava_onevision", "qwen2_vl", "qwen2_5_vl", "qwen3_vl", "llava_orig")
            if f in available_families()]


def _image(k: int = 2) -> Image.Image:
    with Image.open(os.path.join(EVAL_DATA, f"shapes_{k}.png")) as im:
        return im.convert("RGB")


def _lm(family: str, **kwargs) -> MMUniDPO:
    model, processor = tiny(family, seed=0)
    return MMUniDPO(model=model, processor=processor, device="cpu", **kwargs)


def _instance(kind: str, args: tuple, doc_id: int, task: str = "t") -> Instance:
    return Instance(request_type=kind, arguments=args, idx=0, metadata={"task": task, "doc_id": doc_id, "repeats": 1})


GREEDY = {"max_new_tokens": 4, "temperature": 0, "do_sample": False, "until": ["\n\n"]}


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_equals_one_by_one(family):
    """Left-padded batches of prompts of different lengths (and 0, 1, 2 images) give what one-by-one gives."""
    lm = _lm(family, batch_size=3)
    contexts = ["Is there a circle in the image?", "Describe <image> and <image> briefly.", "Say hello."]
    images = [[_image(1)], [_image(2), _image(3)], []]
    batched = lm.generate(contexts, images, GREEDY)
    single = [lm.generate([c], [i], GREEDY)[0] for c, i in zip(contexts, images)]
    assert batched == single and all(isinstance(t, str) for t in batched)

    items = [(contexts[0], " Yes", images[0]), (contexts[1], " a blue square and a star", images[1]),
             (contexts[2], " Hello!", images[2])]
    batched_ll = lm.loglikelihoods(items)
    single_ll = [lm.loglikelihoods([item])[0] for item in items]
    for (b, bg), (s, sg) in zip(batched_ll, single_ll):
        assert b == pytest.approx(s, abs=1e-4) and bg == sg and b < 0


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_loglikelihood_is_the_sum_of_token_logprobs_and_greedy_flag(family):
    lm = _lm(family)
    img = [_image(1)]
    prompt = lm.render("Is there a circle?", 1)
    inputs = lm.processor(text=[prompt], images=img, return_tensors="pt",
                          add_special_tokens=lm.adapter.hooks.needs_special_tokens(prompt))
    with torch.no_grad():
        out = lm.model.generate(**inputs, max_new_tokens=3, do_sample=False, pad_token_id=lm.pad_token_id,
                                eos_token_id=[-1])
    new = out[0, inputs["input_ids"].shape[1]:].tolist()
    # The longest greedy prefix that survives decode + encode (random byte-level tokens may not).
    new = next((new[:k] for k in range(len(new), 0, -1)
                if lm._continuation_ids(prompt, lm.tokenizer.decode(new[:k])) == new[:k]), None)
    if new is None:
        pytest.skip("no greedy token survives a decode/encode round trip with this tokenizer")
    text = lm.tokenizer.decode(new)
    logp, greedy = lm.loglikelihoods([("Is there a circle?", text, img)])[0]
    assert greedy is True
    # by hand: teacher-forced log-softmax over the generated tokens
    ids = torch.cat([inputs["input_ids"], torch.tensor([new])], dim=1)
    extra = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
    if "mm_token_type_ids" in extra:
        extra["mm_token_type_ids"] = torch.nn.functional.pad(extra["mm_token_type_ids"], (0, len(new)))
    with torch.no_grad():
        logits = lm.model(input_ids=ids, attention_mask=torch.ones_like(ids), **extra).logits
    n = inputs["input_ids"].shape[1]
    by_hand = sum(torch.log_softmax(logits[0, n - 1 + j].float(), -1)[t].item() for j, t in enumerate(new))
    assert logp == pytest.approx(by_hand, abs=1e-3)
    wrong_logp, wrong_greedy = lm.loglikelihoods([("Is there a circle?", text + " zebra", img)])[0]
    assert wrong_greedy is False and wrong_logp < logp


def test_messages_place_images_at_markers_or_first():
    lm = _lm("llava")
    assert lm.messages("Compare <image> with <image> now", 2)[0]["content"] == [
        {"type": "text", "text": "Compare"}, {"type": "image"}, {"type": "text", "text": "with"}, {"type": "image"},
        {"type": "text", "text": "now"}]
    assert lm.messages("What is this?", 1)[0]["content"] == [{"type": "image"}, {"type": "text", "text": "What is this?"}]
    assert lm.messages("<image> two?", 2)[0]["content"][:2] == [{"type": "image"}, {"type": "image"}]  # mismatch
    assert lm.render("What is this?", 1) == "USER: <image>\nWhat is this? ASSISTANT:"
    with_system = _lm("qwen2_vl", system_prompt="Answer briefly.")
    assert with_system.render("Hi", 0).startswith("<|im_start|>system\nAnswer briefly.<|im_end|>")


def test_generation_settings():
    lm = _lm("llava", max_new_tokens=7)
    settings, until = lm._generation_settings({"until": "###", "temperature": 0, "top_p": 1.0, "image_aspect_ratio": "x"})
    assert until == ["###"] and settings["do_sample"] is False and settings["max_new_tokens"] == 7
    assert settings["temperature"] is None and "image_aspect_ratio" not in settings
    settings, _ = lm._generation_settings({"temperature": 0.7, "top_p": 0.9, "max_new_tokens": 3})
    assert settings == {"max_new_tokens": 3, "num_beams": 1, "top_p": 0.9, "do_sample": True, "temperature": 0.7}
    assert MMUniDPO._cut("yes\n\nmore", ["\n\n"]) == "yes"


def test_requests_through_the_lmms_eval_api():
    """generate_until / loglikelihood / generate_until_multi_round with Instances and a task_dict, as the
    evaluator calls them: results come back in request order, whatever the batching did."""
    lm = _lm("llava", batch_size=2)
    docs = [{"image": _image(k + 1), "q": f"Question {k}?" * (k + 1)} for k in range(3)]
    lm.task_dict = {"t": {"test": docs}}

    def visual(doc):
        return [doc["image"]]

    gen = [_instance("generate_until", (docs[k]["q"], dict(GREEDY), visual, k, "t", "test"), k) for k in range(3)]
    outputs = lm.generate_until(gen)
    assert outputs == [lm.generate([d["q"]], [[d["image"]]], GREEDY)[0] for d in docs]

    ll = [_instance("loglikelihood", (docs[k]["q"], " yes" if k else (lambda doc: " no"), visual, k, "t", "test"), k)
          for k in range(3)]
    scores = lm.loglikelihood(ll)
    assert scores[0] == pytest.approx(lm.loglikelihoods([(docs[0]["q"], " no", [docs[0]["image"]])])[0])
    assert all(isinstance(s, float) and isinstance(g, bool) for s, g in scores)

    seen = []

    def doc_to_text(doc, previous_output=None, round_idx=None, previous_round_info=None):
        seen.append((docs.index(doc), round_idx, len(previous_output), previous_round_info))
        rounds = docs.index(doc) + 1  # doc k runs k + 1 rounds
        return None, f"Round {round_idx}: go on", round_idx >= rounds, None, {"round": round_idx}

    multi = [_instance("generate_until_multi_round", (docs[k]["q"], dict(GREEDY), visual, doc_to_text, k, "t", "test"), k)
             for k in range(3)]
    results = lm.generate_until_multi_round(multi)
    assert [len(r) for r in results] == [1, 2, 3]
    assert all(isinstance(r, list) and all(isinstance(x, str) for x in r) for r in results)
    assert results[2][0] == outputs[2]  # round 0 answers the task's own context
    assert results[2][1] == lm.generate(["Round 1: go on"], [[docs[2]["image"]]], GREEDY)[0]  # same image kept
    assert (2, 2, 2, {"round": 1}) in seen


def test_video_visuals_are_refused():
    lm = _lm("llava")
    lm.task_dict = {"t": {"test": [{}]}}
    req = _instance("generate_until", ("Describe", dict(GREEDY), lambda doc: ["clip.mp4"], 0, "t", "test"), 0)
    with pytest.raises(NotImplementedError, match="images only"):
        lm.generate_until([req])


def test_text_only_models_are_refused_clearly():
    model, processor = tiny("causal_lm")
    with pytest.raises(NotImplementedError, match="causal_lm.*eval math"):
        MMUniDPO(model=model, processor=processor, device="cpu")


@pytest.mark.skipif("llava_orig" not in available_families(), reason="needs llava-torch")
def test_llava_orig_against_llavas_own_code():
    """The original LLaVA code, run the way its own scripts run it (one prompt at a time, conversation
    template, ``tokenizer_image_token``, ``model.generate(inputs, images, image_sizes)`` / ``model(...)``),
    gives what our batched, left-padded generation and log-likelihoods give."""
    from llava.conversation import conv_templates
    from llava.mm_utils import process_images, tokenizer_image_token

    from mm_unidpo.models.families.llava_orig import cache_keyword_compat

    lm = _lm("llava_orig", batch_size=3)
    assert lm.family == "llava_orig"
    model, tok, image_processor = lm.model, lm.tokenizer, lm.processor.image_processor
    contexts = ["Is there a circle in the image?", "Describe <image> and <image> briefly.", "Say hello."]
    images = [[_image(1)], [_image(2), _image(3)], []]

    def llava_prompt(context: str, n_images: int) -> str:
        conv = conv_templates["vicuna_v1"].copy()
        text = context if "<image>" in context else "<image>\n" * n_images + context  # as llava/eval/*.py
        conv.append_message(conv.roles[0], text)
        conv.append_message(conv.roles[1], None)
        return conv.get_prompt()

    def llava_inputs(context: str, imgs: list) -> dict:
        ids = torch.tensor([tokenizer_image_token(llava_prompt(context, len(imgs)), tok, -200)])
        extra = {"images": process_images(imgs, image_processor, model.config), "image_sizes": [im.size for im in imgs]} \
            if imgs else {}
        return {"ids": ids, **extra}

    assert lm.render(contexts[0], 1) == llava_prompt(contexts[0], 1)
    ours = lm.generate(contexts, images, {"max_new_tokens": 5, "temperature": 0})
    for context, imgs, text in zip(contexts, images, ours):
        inputs = llava_inputs(context, imgs)
        # LLaVA's own generate, with only the KV-cache keyword renamed for transformers >= 5.24 (see there)
        with torch.no_grad(), cache_keyword_compat(model):
            out = model.generate(inputs=inputs["ids"], images=inputs.get("images"), image_sizes=inputs.get("image_sizes"),
                                 max_new_tokens=5, do_sample=False, eos_token_id=sorted(lm.adapter.end_token_ids),
                                 pad_token_id=lm.pad_token_id)
        assert text == tok.decode(out[0], skip_special_tokens=True)

    items = [(contexts[0], " Yes", images[0]), (contexts[1], " a blue square", images[1]), (contexts[2], " Hi!", images[2])]
    for (context, continuation, imgs), (logp, _) in zip(items, lm.loglikelihoods(items)):
        inputs = llava_inputs(context, imgs)
        cont = lm._continuation_ids(llava_prompt(context, len(imgs)), continuation)
        ids = torch.cat([inputs["ids"], torch.tensor([cont])], dim=1)
        with torch.no_grad():
            logits = model(input_ids=ids, images=inputs.get("images"), image_sizes=inputs.get("image_sizes")).logits
        start = logits.shape[1] - len(cont) - 1  # the expanded prompt's last position predicts the first token
        by_hand = sum(torch.log_softmax(logits[0, start + j], -1)[t].item() for j, t in enumerate(cont))
        assert logp == pytest.approx(by_hand, abs=1e-4)


def test_arguments_checked():
    with pytest.raises(TypeError, match="pretrained"):
        MMUniDPO()
    with pytest.raises(TypeError, match="unknown model_args"):
        MMUniDPO(pretrained="x", colour="blue")


def test_load_in_4bit_is_passed_to_load_pretrained(monkeypatch):
    """4-bit needs CUDA + bitsandbytes (not testable here): check the option reaches load_pretrained with
    the model placed at load time, and that the model is not moved afterwards."""
    import mm_unidpo.evaluation.lmms.model as lmms_model

    model, processor = tiny("llava")
    calls = {}

    def fake_load(pretrained, **kwargs):
        calls.update(kwargs, pretrained=pretrained)
        model.is_loaded_in_4bit = True
        return model, processor

    monkeypatch.setattr(lmms_model, "load_pretrained", fake_load)
    lm = MMUniDPO(pretrained="some/model", adapter="some/adapter", load_in_4bit="true", dtype="bfloat16", device="cpu")
    assert calls["load_in_4bit"] is True and calls["adapter"] == "some/adapter" and calls["dtype"] == "bfloat16"
    assert calls["device_map"] == {"": 0} and lm.model is model
