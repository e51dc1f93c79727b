"""Tests for mm_unidpo.testing: tiny offline models/processors of the real classes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mm_unidpo.testing import (FAMILIES, available_families, load_processor_without_video, tiny,
                               tiny_tokenizer)
from mm_unidpo.testing.tokenizer import STYLES, base_tokenizer_json

OPEN_TURN_STYLES = ("glm4v", "deepseek_vl")
IMAGES = Path(os.environ.get("MM_UNIDPO_TEST_IMAGES", "/work/shared/data/images"))
VLMS = [f for f in available_families() if f != "causal_lm"]
HF_VLMS = [f for f in VLMS if f != "llava_orig"]

# image tokens per image at the tiny sizes: (astronaut 512x512, rocket 640x427, camera 512x512)
EXPECTED_TOKENS = {
    "llava": (16, 16, 16), "llava_orig": (16, 16, 16),
    "llava_next": (36, 44, 36), "llava_onevision": (36, 44, 36),
    "qwen2_vl": (16, 12, 16), "qwen2_5_vl": (16, 12, 16), "qwen3_vl": (16, 12, 16),
    "gemma3": (4, 4, 4), "idefics3": (40, 28, 40), "smolvlm": (40, 28, 40),
    "internvl": (20, 28, 20), "qwen3_5": (16, 12, 16),
    "glm4v": (4, 6, 4), "qwen3_vl_moe": (16, 12, 16), "qwen3_5_moe": (16, 12, 16), "glm4v_moe": (4, 6, 4),
    "mllama": (1, 1, 1), "gemma4": (64, 60, 64),
}
# LLaVA-OneVision drops anyres tiles for rows with several images: base features + 1 newline each.
MULTI_IMAGE_ROW_TOKENS = {"llava_onevision": 17}


def _image(name):
    from PIL import Image

    path = IMAGES / name
    if not path.is_file():
        pytest.skip(f"test image {path} not found (set MM_UNIDPO_TEST_IMAGES to a folder with it)")
    with Image.open(path) as im:
        return im.convert("RGB")


def _user(question, n_images=1):
    return {"role": "user", "content": [{"type": "image"}] * n_images + [{"type": "text", "text": question}]}


def _assistant(text):
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def _encode(family, processor, texts, images):
    """images: one list of PIL images per text row."""
    if family == "llava_orig":
        return processor(text=texts, images=[im for row in images for im in row])
    return processor(images=images, text=texts, return_tensors="pt", padding=True)


def _forward(model, batch, labels=True):
    batch = dict(batch)
    if labels:
        lab = batch["input_ids"].clone()
        lab[batch["attention_mask"] == 0] = -100
        lab[lab < 0] = -100  # llava_orig's IMAGE_TOKEN_INDEX (-200)
        image_id = getattr(model.config, "image_token_id", None)
        if image_id is not None:
            lab[lab == image_id] = -100
        batch["labels"] = lab
    return model(**batch)


def _image_token_counts(family, model, processor, batch):
    ids = batch["input_ids"]
    if family == "llava_orig":
        return ((ids == processor.image_token_index).sum(1) * processor.num_image_tokens).tolist()
    return (ids == model.config.image_token_id).sum(1).tolist()


# ---------------------------------------------------------------------------------------- tokenizer
@pytest.mark.parametrize("style", STYLES)
def test_chat_template_shape(style):
    tok = tiny_tokenizer(style)
    assert 500 <= len(tok) <= 1000
    conv = [_user("What is shown in this image?"), _assistant("A red rocket.")]
    prompt = tok.apply_chat_template(conv[:1], tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template(conv, tokenize=False)
    assert full.startswith(prompt), (prompt, full)
    # GLM-4.1V's and DeepSeek-VL's templates, like the real ones, close no assistant turn (the model adds eos)
    assert full.rstrip("\n").endswith("A red rocket." + ("" if style in OPEN_TURN_STYLES else tok.eos_token))
    ids = tok(full, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == full
    assert tok.pad_token_id is not None and tok.eos_token_id is not None
    for t in tok.all_special_tokens:
        assert len(tok(t, add_special_tokens=False)["input_ids"]) == 1, t
    # string content renders like a single text part
    assert tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False) == \
        tok.apply_chat_template([{"role": "user", "content": [{"type": "text", "text": "Hi"}]}], tokenize=False)


def test_bpe_training_is_deterministic():
    assert base_tokenizer_json.__wrapped__() == base_tokenizer_json()


def test_causal_lm_text_round_trip():
    model, tok = tiny("causal_lm")
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.config.vocab_size >= len(tok)
    conv = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "How many people are in the picture?"},
            {"role": "assistant", "content": "There are two people."}]
    text = tok.apply_chat_template(conv, tokenize=False)
    assert text.startswith(tok.bos_token) and text.endswith("There are two people." + tok.eos_token)
    ids = tok.apply_chat_template(conv, tokenize=True, return_dict=False)
    assert tok.decode(ids) == text
    assert ids.count(tok.bos_token_id) == 1
    # Like real Llama-3: the tokenizer also adds bos, so re-tokenizing the rendered text doubles it.
    assert tok(text)["input_ids"][:2] == [tok.bos_token_id] * 2
    prompt = tok.apply_chat_template(conv[:2], tokenize=True, add_generation_prompt=True, return_dict=False)
    assert ids[: len(prompt)] == prompt
    input_ids = torch.tensor([ids])
    labels = input_ids.clone()
    labels[:, : len(prompt)] = -100
    out = model(input_ids=input_ids, labels=labels)
    assert torch.isfinite(out.loss) and out.logits.shape == (1, len(ids), model.config.vocab_size)


def test_unknown_family():
    with pytest.raises(ValueError, match="unknown family"):
        tiny("gpt5")
    assert set(available_families()) <= set(FAMILIES)


# ---------------------------------------------------------------------------------------- VLMs
@pytest.mark.parametrize("family", VLMS)
def test_single_image_forward(family):
    img = _image("astronaut.png")
    model, processor = tiny(family)
    conv = [_user("What is shown in this image?"), _assistant("An astronaut.")]
    text = processor.apply_chat_template(conv, tokenize=False)
    batch = _encode(family, processor, [text], [[img]])
    out = _forward(model, batch)
    assert torch.isfinite(out.loss)
    n_tokens = EXPECTED_TOKENS[family][0]
    assert _image_token_counts(family, model, processor, batch) == [n_tokens]
    # the model consumed exactly that many image features
    seq = batch["input_ids"].shape[1] + (n_tokens - 1 if family == "llava_orig" else 0)
    assert out.logits.shape[:2] == (1, seq)


@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("family", VLMS)
def test_batch_images_of_different_sizes(family, padding_side):
    astronaut, rocket, camera = _image("astronaut.png"), _image("rocket.jpg"), _image("camera.png")
    model, processor = tiny(family, padding_side=padding_side)
    model.eval()
    short = processor.apply_chat_template([_user("Hi?"), _assistant("Yes.")], tokenize=False)
    long = processor.apply_chat_template(
        [_user("Compare the two pictures in detail.", n_images=2), _assistant("The left one is larger.")],
        tokenize=False)
    batch = _encode(family, processor, [short, long], [[rocket], [astronaut, camera]])
    exp = EXPECTED_TOKENS[family]
    two = 2 * MULTI_IMAGE_ROW_TOKENS[family] if family in MULTI_IMAGE_ROW_TOKENS else exp[0] + exp[2]
    assert _image_token_counts(family, model, processor, batch) == [exp[1], two]
    with torch.no_grad():
        out = _forward(model, batch)
        assert torch.isfinite(out.loss)
        # padding does not change the padded row's logits (RoPE is shift-invariant; M-RoPE uses the mask)
        alone = _forward(model, _encode(family, processor, [short], [[rocket]]), labels=False).logits[0]
    if family == "llava_orig":  # it re-pads after splicing in image features, on config.tokenizer_padding_side
        n = alone.shape[0]
        got = out.logits[0][-n:] if padding_side == "left" else out.logits[0][:n]
    else:
        got = out.logits[0][batch["attention_mask"][0].bool()]
    if family == "mllama":
        # Not so in transformers' Mllama: a token with no image to cross-attend (here those before the image)
        # attends uniformly to every vision token of its row, the padding image included, and every later
        # token sees it; the adapter runs each image count in a forward of its own (families/mllama.py).
        assert not torch.allclose(got, alone, rtol=1e-4, atol=1e-4)
        return
    torch.testing.assert_close(got, alone, rtol=1e-4, atol=1e-4)


# mllama: its images are outside the token stream (one <|image|> each, not expanded): no count to check
@pytest.mark.parametrize("family", [f for f in HF_VLMS if f != "mllama"])
def test_image_token_count_mismatch_is_detected(family):
    img = _image("horse.png")
    model, processor = tiny(family)
    text = processor.apply_chat_template([_user("Describe the photo.")], tokenize=False, add_generation_prompt=True)
    batch = dict(_encode(family, processor, [text], [[img]]))
    pos = int((batch["input_ids"][0] == model.config.image_token_id).nonzero()[0])
    for key in ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids"):
        if key in batch:
            batch[key] = torch.cat([batch[key][:, :pos], batch[key][:, pos + 1:]], dim=1)
    with pytest.raises(ValueError, match="(?i)tokens"):
        model(**batch)


@pytest.mark.parametrize("family", available_families())
def test_same_seed_same_weights(family):
    model_a, processor = tiny(family, seed=0)
    model_b, _ = tiny(family, seed=0)
    model_c, _ = tiny(family, seed=1)
    if family == "causal_lm":
        batch = processor(["The cat is sleeping on the sofa."], return_tensors="pt")
    else:
        text = processor.apply_chat_template([_user("Hi")], tokenize=False, add_generation_prompt=True)
        batch = _encode(family, processor, [text], [[_image("rocket.jpg")]])
    with torch.no_grad():
        la, lb, lc = (_forward(m, batch, labels=False).logits for m in (model_a, model_b, model_c))
    assert torch.equal(la, lb)
    assert not torch.allclose(la, lc)


# ---------------------------------------------------------------------------------------- processors
@pytest.mark.parametrize("family", ["qwen2_vl", "llava_onevision", "internvl"])
def test_processor_without_video_save_load(family, tmp_path):
    import transformers

    model, processor = tiny(family)
    real_cls = getattr(transformers, type(processor).__name__)
    assert isinstance(processor, real_cls)
    assert not hasattr(processor, "video_processor")
    with pytest.raises(ValueError, match="video"):
        processor(text=["x"], videos=[[_image("rocket.jpg")] * 2])
    processor.save_pretrained(tmp_path)
    reloaded = load_processor_without_video(tmp_path)
    assert isinstance(reloaded, real_cls)
    img = _image("coffee.png")
    text = processor.apply_chat_template([_user("Hi")], tokenize=False, add_generation_prompt=True)
    a = processor(images=[img], text=[text], return_tensors="pt")
    b = reloaded(images=[img], text=[text], return_tensors="pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert reloaded.chat_template == processor.chat_template


@pytest.mark.skipif("llava_orig" not in available_families(), reason="llava-torch is not installed")
def test_llava_orig_template_matches_conversation_module():
    from llava.conversation import conv_templates

    _, processor = tiny("llava_orig")
    conv = conv_templates[processor.conv_mode].copy()
    conv.append_message(conv.roles[0], "<image>\nWhat is shown in this image?")
    conv.append_message(conv.roles[1], "A rocket.")
    conv.append_message(conv.roles[0], "And the color?")
    conv.append_message(conv.roles[1], None)
    messages = [_user("What is shown in this image?"), _assistant("A rocket."),
                {"role": "user", "content": "And the color?"}]
    assert processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == conv.get_prompt()


def test_other_families_do_not_import_llava():
    code = ("import sys; from mm_unidpo.testing import tiny; tiny('llava'); tiny('qwen2_vl'); "
            "assert 'llava' not in sys.modules, 'llava imported'")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=120)


@pytest.mark.parametrize("family", ["smolvlm", "gemma4"])
def test_checkpoint_loads_through_the_family_loader(family, tmp_path):
    """A saved SmolVLM / Gemma-4 checkpoint loads through the family's loader (no video processor, and for
    SmolVLM no num2words) into a processor that renders and tokenizes exactly as the one saved."""
    from mm_unidpo.models.loading import load_pretrained

    model, processor = tiny(family)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded_model, loaded = load_pretrained(str(tmp_path), dtype="float32")
    assert type(loaded_model) is type(model) and type(loaded).__name__ == type(processor).__name__
    assert getattr(loaded, "image_seq_len", None) == getattr(processor, "image_seq_len", None)
    assert getattr(loaded, "image_seq_length", None) == getattr(processor, "image_seq_length", None)
    conv = [[{"role": "user", "content": [{"type": "image", "image": _image("coffee.png")},
                                          {"type": "text", "text": "Hi"}]}]]
    a, b = (p.apply_chat_template(conv, tokenize=True, return_dict=True, add_generation_prompt=True,
                                  return_tensors="pt") for p in (processor, loaded))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
