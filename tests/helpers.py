"""Helpers shared by the adapter tests (test_models_adapters.py, test_models_llava_orig.py and
test_models_packed.py) and others: the shared test photos, tolerances and batch layouts, the naive
one-example reference log-prob, the single-thread fixture, the packed-vs-plain training run and a
stand-in vllm module."""

from __future__ import annotations

import importlib.machinery
import json
import sys
import types
from pathlib import Path

import pytest
import torch

from mm_unidpo.models import get_adapter

IMAGES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "images"
LLAVA_ORIG_IMAGE = -200  # llava.constants.IMAGE_TOKEN_INDEX
ATOL, RTOL = 1e-4, 1e-5
LAYOUTS = ["plain-right", "plain-left", "packed"]


@pytest.fixture(scope="module", autouse=True)
def one_thread(single_thread):
    """conftest's `single_thread`, autouse in each test module that imports this (the model tests); the
    other modules name `single_thread` in their pytestmark."""
    yield


def make_adapter(model, processor, layout: str = "packed", **options):
    """An adapter for one batch layout ("packed" falls back to plain where the family has no packed path)."""
    packed = layout == "packed"
    adapter = get_adapter(model, processor, shared_prefix=packed,
                          padding_side="right" if packed else layout.split("-")[1], **options)
    assert adapter.shared_prefix == (packed and "packed" in adapter.spec.layouts)
    return adapter


def need_images(*names: str) -> None:
    for name in names:
        if not (IMAGES / name).is_file():
            pytest.skip(f"test photo {IMAGES / name} not found (the shared test images are not installed)")


def logps(adapter, model, records):
    with torch.no_grad():
        return adapter.sequence_logps(model, adapter.collate(records))


def naive_logp(family: str, model, encoded, response_ids: list[int], *, differentiable: bool = False):
    """log p(response | prompt, images) for ONE example (an encoded pair or prompt): unpadded forward,
    hand-written gather. A float, or with `differentiable` a float64 tensor with its graph (for gradients)."""
    prompt_ids = encoded.prompt_ids if hasattr(encoded, "prompt_ids") else encoded.ids
    ids = prompt_ids + list(response_ids)
    input_ids = torch.tensor([ids])
    shift = 0  # extra positions before the response (llava_orig's spliced image features)
    with torch.set_grad_enabled(differentiable):
        if family == "llava_orig":
            if encoded.vision:
                images = encoded.vision["images"]
                out = model.prepare_inputs_labels_for_multimodal(input_ids, None, None, None, None, images, None)
                inputs_embeds = out[4]
                # each -200 id became num_patches features ("patch" drops CLS)
                shift = prompt_ids.count(LLAVA_ORIG_IMAGE) * (model.get_vision_tower().num_patches - 1)
                assert inputs_embeds.shape[1] == len(ids) + shift
                logits = model(inputs_embeds=inputs_embeds).logits[0]
            else:
                logits = model(input_ids=input_ids).logits[0]
        else:
            inputs = {"input_ids": input_ids, **encoded.vision}
            if "cross_attention_mask" in inputs:  # mllama: the processor's own mask for the whole sequence
                inputs["cross_attention_mask"] = mllama_cross_attention_mask(model, ids, encoded.vision)
            for key, values in encoded.token_extras.items():
                inputs[key] = torch.tensor([values + [0] * len(response_ids)])
            logits = model(**inputs).logits[0]
    logp = torch.log_softmax(logits.double(), dim=-1)
    start = len(prompt_ids) + shift  # position of the first response token
    total = 0.0
    for j, token in enumerate(response_ids):
        total = total + logp[start + j - 1, token]  # logits at t predict token t + 1
    return total if differentiable else float(total)


def mllama_cross_attention_mask(model, ids: list[int], vision: dict) -> torch.Tensor:
    """What MllamaProcessor computes for the token sequence `ids` with these images (its own functions, on
    the whole conversation rather than the prompt alone)."""
    from transformers.models.mllama.processing_mllama import (convert_sparse_cross_attention_mask_to_dense,
                                                              get_cross_attention_token_mask)

    tiles = vision["aspect_ratio_mask"][0].sum(-1).tolist()
    ranges = get_cross_attention_token_mask(ids, model.config.image_token_index)
    dense = convert_sparse_cross_attention_mask_to_dense([ranges], [tiles], vision["aspect_ratio_mask"].shape[-1],
                                                         len(ids))
    return torch.from_numpy(dense)


def packed_and_plain_training_curves(tmp_path: Path, model_dir: Path, *, loss: str,
                                     max_steps: int) -> dict[bool, list[float]]:
    """LoRA training on the checkpoint in model_dir with the pairs in tmp_path / "data.jsonl", once with the
    shared-prefix (packed) layout and once with the plain one: {shared_prefix: the logged losses}."""
    from mm_unidpo.train.config import config_from_dict
    from mm_unidpo.train.run import train

    curves = {}
    for shared in (True, False):
        raw = {"model": {"name_or_path": str(model_dir), "dtype": "float32", "shared_prefix": shared},
               "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
               "data": {"train": str(tmp_path / "data.jsonl"), "image_root": str(IMAGES)},
               "loss": {"name": loss},
               "train": {"output_dir": str(tmp_path / f"out_{shared}"), "learning_rate": 3e-3, "max_steps": max_steps,
                         "per_device_train_batch_size": 2, "logging_steps": 1, "save_strategy": "no",
                         "use_cpu": True, "disable_tqdm": True, "seed": 0}}
        train(config_from_dict(raw).validate())
        state = json.loads((tmp_path / f"out_{shared}" / "trainer_state.json").read_text())
        curves[shared] = [e["loss"] for e in state["log_history"] if "loss" in e]
    return curves


def install_fake_vllm(monkeypatch, llm_class: type) -> None:
    """A stand-in `vllm` package (LLM = `llm_class`, SamplingParams keeps its keywords, LoRARequest its
    arguments), so the vLLM backends can be tested without vLLM: what they hand to it and make of it."""
    vllm = types.ModuleType("vllm")
    vllm.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    vllm.LLM, vllm.SamplingParams = llm_class, lambda **kw: types.SimpleNamespace(**kw)
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = lambda *args: args
    for name, module in (("vllm", vllm), ("vllm.lora", types.ModuleType("vllm.lora")), ("vllm.lora.request", request)):
        monkeypatch.setitem(sys.modules, name, module)
