"""The generic family (models/families/generic.py): image-text-to-text models no family file claims, here
Aya-Vision and DeepSeek-VL, held to the processor's own rendering and the model's plain forward.

The reference is independent of the adapter's encoding: ``processor.apply_chat_template(..., tokenize=True)``
on the whole conversation (images in the messages, as transformers and TRL pass them) and on the prompt with
the generation prompt; the response is the tokens after the prompt's (whitespace the template writes after
the turn dropped, the EOS added where the template closes no turn, as DeepSeek-VL's); one unpadded forward,
a hand-written gather. Log-probs and float64 gradients must match, padded right and left, for one and two
images, a system turn and a multi-turn prompt, and a text-only prompt. Models it cannot score exactly are
refused, saying why.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

from mm_unidpo.data import BadRecordError, PreferenceRecord, load_record_images
from mm_unidpo.models import get_adapter
from mm_unidpo.models.families.generic import Generic
from mm_unidpo.models.loading import detect_family
from mm_unidpo.testing import GENERIC, tiny

from .helpers import ATOL, IMAGES, RTOL, need_images
from .helpers import one_thread  # noqa: F401  (autouse fixture)


@pytest.fixture(scope="module")
def models():
    """model type -> (model, processor), built once, in eval mode."""
    return {name: (model.eval(), processor) for name in GENERIC for model, processor in [tiny(name, seed=0)]}


def image(name: str) -> dict:
    return {"type": "image", "path": name}


def text(value: str) -> dict:
    return {"type": "text", "text": value}


# prompt messages (image parts name their photo), chosen, rejected
CASES = [
    (
        [{"role": "user", "content": [image("astronaut.png"), text("What is shown in this image?")]}],
        "An astronaut in a white space suit.",
        "A cat.",
    ),
    (
        [
            {"role": "system", "content": [text("You are a helpful assistant.")]},
            {"role": "user", "content": [image("rocket.jpg"), text("What is this?")]},
            {"role": "assistant", "content": [text("A rocket.")]},
            {"role": "user", "content": [image("camera.png"), text("And this one?")]},
        ],
        "A man holds a camera.",
        "The sun is setting in the west.",
    ),
    ([{"role": "user", "content": [text("How many people are in the picture?")]}], "There are two people.", "No."),
]


def record(i: int) -> PreferenceRecord:
    messages, chosen, rejected = CASES[i]
    photos = [p["path"] for m in messages for p in m["content"] if p["type"] == "image"]
    need_images(*photos)
    prompt = [
        {
            "role": m["role"],
            "content": [{"type": p["type"], **({"text": p["text"]} if "text" in p else {})} for p in m["content"]],
        }
        for m in messages
    ]
    return PreferenceRecord(
        prompt=prompt,
        chosen=chosen,
        rejected=rejected,
        images=[str(IMAGES / p) for p in photos],
        id=f"case{i}",
        index=i,
    )


def reference_logp(model, processor, i: int, which: str) -> torch.Tensor:
    """log p(response | prompt) from the processor's own chat-template tokenization and one plain forward."""
    messages, chosen, rejected = CASES[i]
    loaded = iter(load_record_images(record(i)))
    messages = [
        {
            **m,
            "content": [{"type": "image", "image": next(loaded)} if p["type"] == "image" else p for p in m["content"]],
        }
        for m in messages
    ]
    turn = {"role": "assistant", "content": [text(chosen if which == "chosen" else rejected)]}
    prompt = processor.apply_chat_template(
        messages, tokenize=True, return_dict=True, add_generation_prompt=True, return_tensors="pt"
    )
    whole = dict(processor.apply_chat_template([*messages, turn], tokenize=True, return_dict=True, return_tensors="pt"))
    n = prompt["input_ids"].shape[1]
    assert torch.equal(whole["input_ids"][0, :n], prompt["input_ids"][0])
    ids = whole["input_ids"][0].tolist()
    tokenizer = processor.tokenizer
    while not tokenizer.decode(ids[-1:]).strip():  # what the template writes after the turn
        ids.pop()
    if ids[-1] != tokenizer.eos_token_id:  # a turn closed by no token: the model ends it with EOS
        ids.append(tokenizer.eos_token_id)
    whole["input_ids"] = torch.tensor([ids])
    whole.pop("attention_mask")
    logp = torch.log_softmax(model(**whole).logits[0].double(), dim=-1)
    return sum(logp[t - 1, ids[t]] for t in range(n, len(ids)))


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("name", GENERIC)
def test_generic_equals_the_plain_forward_on_the_processors_rendering(models, name, padding_side):
    """Log-probs and float64 gradients of sum(chosen) - 0.5 sum(rejected): the batched adapter (three
    records of 1, 2 and 0 images, one with a system turn and an earlier exchange) and the reference."""
    model, processor = models[name]
    model = copy.deepcopy(model).double()
    adapter = get_adapter(model, processor, padding_side=padding_side)
    assert adapter.family == "generic" and adapter.layout == "plain"
    # Aya-Vision's text config has Cohere's logit_scale, which AyaVisionForConditionalGeneration's forward does
    # not apply: the model's own forward is the reference (TRL 1.16's fused head applies it: its log-probs are
    # not the model's, 0.2-0.5 nats per response apart on this tiny model).
    assert name != "aya_vision" or model.config.text_config.logit_scale != 1.0
    records = [record(i) for i in range(len(CASES))]
    out = adapter.sequence_logps(model, adapter.collate(records))
    params = [p for p in model.parameters() if p.requires_grad]
    ours = torch.autograd.grad(out.chosen_logps.sum() - 0.5 * out.rejected_logps.sum(), params, allow_unused=True)
    total = torch.zeros((), dtype=torch.float64)
    for i in range(len(CASES)):
        chosen, rejected = (reference_logp(model, processor, i, which) for which in ("chosen", "rejected"))
        torch.testing.assert_close(out.chosen_logps[i].double(), chosen.detach(), atol=ATOL, rtol=RTOL)
        torch.testing.assert_close(out.rejected_logps[i].double(), rejected.detach(), atol=ATOL, rtol=RTOL)
        total = total + chosen - 0.5 * rejected
    theirs = torch.autograd.grad(total, params, allow_unused=True)
    vision = 0
    for (n, _), a, b in zip([(n, p) for n, p in model.named_parameters() if p.requires_grad], ours, theirs):
        assert (a is None) == (b is None), n
        if a is not None:
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4, msg=lambda m: f"{n}: {m}")
            vision += ("vision" in n) and bool(a.abs().sum() > 0)
    assert vision  # the images reach the result


def test_unknown_types_go_generic_only_when_image_text_to_text(models, tmp_path):
    model, processor = models[GENERIC[0]]
    assert get_adapter(model, processor).family == "generic"
    for model_type, family in [
        ("aya_vision", "generic"),
        ("deepseek_vl", "generic"),
        ("llama", "causal_lm"),
        ("gemma3", "gemma3"),
    ]:
        folder = tmp_path / model_type
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"model_type": model_type}))  # all detect_family reads
        assert detect_family(str(folder)) == family
    assert not Generic.accepts("llama") and Generic.accepts("aya_vision")


def test_a_processor_without_a_chat_template_is_refused(models):
    model, processor = models[GENERIC[0]]
    processor = copy.copy(processor)
    processor.chat_template = None
    with pytest.raises(ValueError, match=r"model_type='aya_vision'.*has no chat template"):
        get_adapter(model, processor)


def test_a_template_without_a_generation_prompt_is_refused(models):
    model, processor = models["deepseek_vl"]
    processor = copy.copy(processor)
    processor.chat_template = processor.chat_template.replace("'Assistant:'", "''")
    with pytest.raises(ValueError, match="writes no generation prompt"):
        get_adapter(model, processor)


def test_a_template_that_fails_on_a_text_turn_is_refused(models):
    model, processor = models["deepseek_vl"]
    processor = copy.copy(processor)
    processor.chat_template = "{{ raise_exception('images only') }}"
    with pytest.raises(ValueError, match=r"chat template fails on a one-turn text conversation .*images only"):
        get_adapter(model, processor)


def test_a_template_that_rewrites_earlier_turns_is_refused(models):
    model, processor = models["deepseek_vl"]
    processor = copy.copy(processor)  # the last user turn is written differently once an answer follows it
    processor.chat_template = (
        "{%- for m in messages %}{{- m['role'] + ': ' + m['content'][0]['text'] }}"
        "{%- if loop.last and m['role'] == 'user' %}{{- '?' }}{%- endif %}{{- '\n' }}"
        "{%- endfor %}{%- if add_generation_prompt %}{{- 'assistant:' }}{%- endif %}"
    )
    with pytest.raises(ValueError, match="does not write the prompt then the assistant's response"):
        get_adapter(model, processor)


def test_a_seam_the_tokenizer_merges_is_a_bad_record(models):
    """A generation prompt ending in a space ("Assistant: "): its rendered prompt is a prefix of the whole
    conversation's text but not of its tokens (" An" is one token): refused, never scored on wrong tokens."""
    model, processor = models["deepseek_vl"]
    processor = copy.copy(processor)
    processor.chat_template = processor.chat_template.replace("'Assistant:'", "'Assistant: '")
    adapter = get_adapter(model, processor)
    with pytest.raises(BadRecordError, match=r"record 0 \(id='case0'\): template_mismatch: the prompt's tokens"):
        adapter.encode(record(0))


def test_a_per_token_processor_input_is_refused(models):
    """Gemma-3's processor returns token_type_ids (bidirectional image attention): forced onto the generic
    family it is refused, since how they continue over a response is the model's business."""
    model, processor = tiny("gemma3", seed=0)
    adapter = get_adapter(model, processor, family="generic")
    with pytest.raises(BadRecordError, match=r"unsupported_model: .*per-token input\(s\) \['token_type_ids'\]"):
        adapter.encode(record(0))


def test_a_processor_that_needs_torchvision_is_refused_naming_the_model(tmp_path):
    """Mistral-3's PixtralProcessor cannot be built without torchvision (never installed here): loading says
    so, naming the model, before any weight is read (a saved processor relabelled as PixtralProcessor)."""
    from mm_unidpo.models.loading import ModelLoadError, load_processor

    _, processor = tiny("llava")
    processor.save_pretrained(tmp_path)
    for path in tmp_path.glob("*.json"):
        data = json.loads(path.read_text())
        if "processor_class" in data:
            path.write_text(json.dumps({**data, "processor_class": "PixtralProcessor"}))
    with pytest.raises(ModelLoadError, match=r"processor of '.*' here: PixtralProcessor requires the Torchvision"):
        load_processor(str(tmp_path), "generic")
