"""Prompts with 1, 2 and 3 images, per VLM family, against the processor's own chat-template tokenization.

transformers' ``processor.apply_chat_template(messages, tokenize=True)`` (and TRL, which calls it) passes
the images of each conversation as one nested list, so a processor that lays images out per text
(LLaVA-OneVision: anyres tiles for one image, the base view of each image for several) sees which images
belong together. Our prompt ids and vision tensors, for training (``encode``) and for generation
(``generate``, a batch of prompts with different image counts), must equal what it gives. llava_orig has
no chat template: there the reference is LLaVA's own conversation template, ``tokenizer_image_token`` and
``process_images``.
"""

from __future__ import annotations

import pytest
import torch

from mm_unidpo.data import PreferenceRecord, load_record_images
from mm_unidpo.models import get_adapter
from mm_unidpo.testing import available_families, tiny

from .helpers import IMAGES, need_images
from .helpers import one_thread  # noqa: F401  (autouse fixture)
from .test_models_adapters import zoo  # noqa: F401  (family -> tiny (model, processor), built once per module)

PHOTOS = ("chelsea.png", "coffee.png", "horse.png")  # different sizes and aspect ratios
TEMPLATE_FAMILIES = [f for f in available_families() if f not in ("causal_lm", "llava_orig")]


def record(n: int, question: str = "Compare the photos.") -> PreferenceRecord:
    need_images(*PHOTOS[:n])
    return PreferenceRecord(prompt="<image>\n" * n + question, chosen="A cat.", rejected="A dog.",
                            images=[str(IMAGES / name) for name in PHOTOS[:n]])


def with_images(messages: list[dict], images: list) -> list[dict]:
    """The adapter's messages with the loaded images put into their image parts, in order."""
    queue = list(images)
    out = []
    for message in messages:
        parts = [{**p, "image": queue.pop(0)} if p.get("type") == "image" else p for p in message["content"]]
        out.append({**message, "content": parts})
    assert not queue
    return out


def reference(processor, conversations: list[list[dict]]) -> dict[str, torch.Tensor]:
    out = processor.apply_chat_template(conversations, tokenize=True, return_dict=True, add_generation_prompt=True,
                                        return_tensors="pt",
                                        processor_kwargs={"padding": True, "padding_side": "left"})
    return dict(out)


def assert_vision_equal(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> None:
    keys = set(theirs) - {"input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids"}
    assert set(ours) == keys
    for key in keys:
        assert torch.equal(torch.as_tensor(ours[key]), torch.as_tensor(theirs[key])), key


@pytest.mark.parametrize("family", TEMPLATE_FAMILIES)
@pytest.mark.parametrize("n", [1, 2, 3])
def test_prompt_ids_equal_apply_chat_template(zoo, family, n):
    model, processor = zoo(family)
    adapter = get_adapter(model, processor)
    rec = record(n)
    encoded = adapter.encode(rec)
    images = load_record_images(rec, max_pixels=adapter.max_image_pixels)
    theirs = reference(processor, [with_images(adapter.messages(rec), images)])
    assert encoded.prompt_ids == theirs["input_ids"][0].tolist()
    assert_vision_equal(encoded.vision, theirs)
    # and the pair's rows get the same vision tensors the model would get for the prompt alone
    with torch.no_grad():
        out = adapter.sequence_logps(model, adapter.collate([rec]))
    assert torch.isfinite(out.chosen_logps).all()


def test_onevision_several_images_of_one_prompt_get_the_base_view_only(zoo):
    """The regression this file guards: passed flat, two images read as two one-image prompts (anyres)."""
    model, processor = zoo("llava_onevision")
    adapter = get_adapter(model, processor)
    one, two = adapter.encode(record(1)), adapter.encode(record(2))
    image_token = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    per_image_one = one.prompt_ids.count(image_token)
    assert two.prompt_ids.count(image_token) < 2 * per_image_one  # no anyres tiles with two images
    assert two.vision["batch_num_images"].tolist() == [2]
    flat = processor(text=[adapter.render(adapter.messages(record(2)), None)],
                     images=load_record_images(record(2), max_pixels=adapter.max_image_pixels), return_tensors="pt")
    assert flat["input_ids"].shape[1] != len(two.prompt_ids)  # what the flat call gave (the old bug)


@pytest.mark.parametrize("family", TEMPLATE_FAMILIES)
def test_generate_inputs_equal_apply_chat_template(zoo, family, monkeypatch):
    """A batch of prompts with 2, 1 and 3 images: the inputs handed to ``model.generate``."""
    model, processor = zoo(family)
    adapter = get_adapter(model, processor)
    recs = [record(2, "What is first?"), record(1, "What is it?"), record(3, "Which is largest?")]
    images = [load_record_images(r, max_pixels=adapter.max_image_pixels) for r in recs]
    prompts = [adapter.render(adapter.messages(r), None) for r in recs]
    captured: dict[str, torch.Tensor] = {}

    def fake_generate(**inputs):
        captured.update(inputs)
        return torch.cat([inputs["input_ids"], inputs["input_ids"][:, -1:]], dim=1)

    monkeypatch.setattr(model, "generate", fake_generate)
    new = adapter.generate(model, prompts, images, max_new_tokens=1)
    assert new.shape == (3, 1)
    theirs = reference(processor, [with_images(adapter.messages(r), im) for r, im in zip(recs, images)])
    assert torch.equal(captured["input_ids"], theirs["input_ids"])
    assert torch.equal(captured["attention_mask"].bool(), theirs["attention_mask"].bool())
    ours = {k: v for k, v in captured.items() if k in theirs and k not in ("input_ids", "attention_mask")}
    extras = {k for k in ("mm_token_type_ids", "token_type_ids") if k in theirs}
    assert_vision_equal({k: v for k, v in ours.items() if k not in extras}, theirs)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_llava_orig_prompt_ids_equal_llava_conversation_code(n):
    """llava_orig renders with LLaVA's own conversation template; its ids are LLaVA's tokenizer_image_token
    of that text and its pixels LLaVA's process_images of the images."""
    pytest.importorskip("llava")
    from llava.constants import IMAGE_TOKEN_INDEX
    from llava.conversation import conv_templates
    from llava.mm_utils import process_images, tokenizer_image_token

    model, processor = tiny("llava_orig", seed=0)
    adapter = get_adapter(model.eval(), processor)
    rec = record(n)
    encoded = adapter.encode(rec)
    conv = conv_templates[adapter.conv_mode].copy()
    conv.append_message(conv.roles[0], "<image>\n" * n + "Compare the photos.")
    conv.append_message(conv.roles[1], None)
    ids = tokenizer_image_token(conv.get_prompt(), processor.tokenizer, IMAGE_TOKEN_INDEX)
    assert encoded.prompt_ids == list(ids) and encoded.prompt_ids.count(IMAGE_TOKEN_INDEX) == n
    images = load_record_images(rec, max_pixels=adapter.max_image_pixels)
    pixels = process_images(images, processor.image_processor, model.config)
    pixels = torch.stack(pixels) if isinstance(pixels, list) else pixels
    assert torch.equal(encoded.vision["images"], pixels)


@pytest.mark.parametrize("family", TEMPLATE_FAMILIES)
def test_system_turn_and_multi_turn_prompt(zoo, family):
    """A system turn, a past exchange and a second image in a later turn: prompt ids and vision tensors equal
    the processor's own chat-template rendering, and the batched log-probs the naive forward's."""
    from .helpers import ATOL, RTOL, naive_logp

    need_images(*PHOTOS[:2])
    model, processor = zoo(family)
    adapter = get_adapter(model, processor)
    rec = PreferenceRecord(prompt=[{"role": "system", "content": "You are a helpful assistant."},
                                   {"role": "user", "content": "<image>\nWhat is in the photo?"},
                                   {"role": "assistant", "content": "A cat on a sofa."},
                                   {"role": "user", "content": "<image>\nAnd in this one?"}],
                           chosen="A cup of coffee.", rejected="A dog.", images=[str(IMAGES / p) for p in PHOTOS[:2]])
    encoded = adapter.encode(rec)
    images = load_record_images(rec, max_pixels=adapter.max_image_pixels)
    theirs = reference(processor, [with_images(adapter.messages(rec), images)])
    assert encoded.prompt_ids == theirs["input_ids"][0].tolist()
    assert_vision_equal(encoded.vision, theirs)
    with torch.no_grad():
        out = adapter.sequence_logps(model, adapter.collate([rec]))
    torch.testing.assert_close(out.chosen_logps.item(), naive_logp(family, model, encoded, encoded.chosen_ids),
                               atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(out.rejected_logps.item(), naive_logp(family, model, encoded, encoded.rejected_ids),
                               atol=ATOL, rtol=RTOL)
