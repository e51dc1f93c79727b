"""Every path, every VLM family (and the generic family's Aya-Vision / DeepSeek-VL): QLoRA loading from a saved
checkpoint (vision tower and projector unquantised and frozen, from the family's spec), the reference
precompute, the pre-flight, generation, the VLM judge and the lmms-eval plugin (generate_until and
loglikelihood), each against an independent computation: the naive one-example forward (helpers.naive_logp)
or the same call made one prompt at a time. One tiny model per family, built once for the module.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from mm_unidpo.data import PreferenceRecord, Prompt
from mm_unidpo.models import FAMILIES as REGISTRY
from mm_unidpo.models import get_adapter
from mm_unidpo.models.families import FamilySpec
from mm_unidpo.models.loading import ModelLoadError, check_vision_side, quantised_module_names, vision_side
from mm_unidpo.testing import GENERIC, available_families, tiny
from mm_unidpo.train.config import config_from_dict
from mm_unidpo.train.preflight import PreflightError, preflight
from mm_unidpo.train.reference import compute_reference_logps
from mm_unidpo.train.setup import build_models, check_frozen

from .helpers import ATOL, IMAGES, RTOL, naive_logp, need_images
from .helpers import one_thread  # noqa: F401  (autouse fixture)

ALL = [f for f in available_families() if f != "causal_lm"] + list(GENERIC)


@pytest.fixture(scope="module")
def zoo():
    cache: dict[str, tuple] = {}

    def get(name: str):
        if name not in cache:
            model, processor = tiny(name, seed=0)
            cache[name] = (model.eval(), processor)
        return cache[name]

    return get


def family_of(name: str) -> str:
    return "generic" if name in GENERIC else name


def records() -> list[PreferenceRecord]:
    need_images("astronaut.png")
    return [
        PreferenceRecord(
            "<image>\nWhat is shown?",
            "An astronaut.",
            "A cat in a hat.",
            images=[str(IMAGES / "astronaut.png")],
            id="img",
            index=0,
        ),
        PreferenceRecord("How many people?", "Two.", "There are three people.", id="text", index=1),
    ]


@pytest.mark.parametrize("name", ALL)
def test_qlora_loading_keeps_the_vision_side_unquantised_and_frozen(zoo, name, tmp_path):
    """A saved checkpoint through train.setup in 4-bit with LoRA: only the language model holds 4-bit weights,
    every vision-tower / projector parameter the family's spec names is frozen, only LoRA trains."""
    pytest.importorskip("bitsandbytes")
    model, processor = zoo(name)
    model.save_pretrained(tmp_path / name)
    processor.save_pretrained(tmp_path / name)
    raw = {
        "model": {"name_or_path": str(tmp_path / name), "dtype": "float32", "load_in_4bit": True},
        "lora": {"r": 4, "alpha": 8},
        "data": {"train": "unused.jsonl"},
        "loss": {"name": "dpo"},
        "train": {"output_dir": str(tmp_path / "out"), "use_cpu": True},
    }
    if name == "glm4v_moe":  # peft would move LoRA from the MLPs to the fused experts: refused, saying what to do
        with pytest.raises(ValueError, match=r"model_type 'glm4v_moe' .* set lora.target_modules to the attention"):
            build_models(config_from_dict(raw).validate())
        raw["lora"]["target_modules"] = ["q_proj", "k_proj", "v_proj", "o_proj"]
    policy, _, reference = build_models(config_from_dict(raw).validate())
    base = policy.get_base_model()
    side = vision_side(base, REGISTRY[family_of(name)].spec)
    quantised = quantised_module_names(base)
    assert reference is None and side and quantised
    assert not [n for n in quantised if any(n.startswith(f"{s}.") or n == s for s in side)]
    assert not [n for n, p in base.named_parameters() if p.requires_grad and any(n.startswith(f"{s}.") for s in side)]
    assert all("lora_" in n for n, p in policy.named_parameters() if p.requires_grad)


def test_a_spec_that_does_not_fit_the_model_is_refused(zoo):
    model, _ = zoo("llava")
    spec = REGISTRY["llava"].spec
    with pytest.raises(ModelLoadError, match=r"family 'x'.*no such module in this model"):
        check_vision_side(model, FamilySpec("x", (), vision_modules=("nope",), projector_modules=()), quantised=False)
    with pytest.raises(ModelLoadError, match=r"outside the language model .*multi_modal_projector\.linear_1"):
        check_vision_side(model, FamilySpec("x", (), projector_modules=()), quantised=False)
    check_vision_side(model, spec, quantised=False)
    check_frozen(model.requires_grad_(False), spec)
    model.model.multi_modal_projector.linear_1.weight.requires_grad_(True)
    try:
        with pytest.raises(RuntimeError, match=r"left trainable: \['model\.multi_modal_projector\.linear_1\.weight'\]"):
            check_frozen(model, spec)
        check_frozen(model, spec, train_projector=True)  # the projector's trainable copy is allowed
    finally:
        model.requires_grad_(True)


@pytest.mark.parametrize("name", ALL)
def test_reference_precompute_and_preflight(zoo, name):
    """The reference pass equals each record's naive forward; the pre-flight keeps the good records and
    names the bad one (two image placeholders, one image) in error mode, drops it once in skip mode."""
    model, processor = zoo(name)
    adapter = get_adapter(model, processor)
    good = records()
    out = compute_reference_logps(model, adapter, good, batch_size=2, device="cpu", disable_adapter=False)
    for i, record in enumerate(good):
        encoded = adapter.encode(record)
        for which in ("chosen", "rejected"):
            naive = naive_logp(name, model, encoded, getattr(encoded, f"{which}_ids"))
            torch.testing.assert_close(out[which][i].item(), naive, atol=ATOL, rtol=RTOL)
            assert out[f"{which}_lengths"][i].item() == len(getattr(encoded, f"{which}_ids"))
    bad = PreferenceRecord(
        "<image>\n<image>\nBoth?", "Yes.", "No.", images=[str(IMAGES / "astronaut.png")], id="two", index=2
    )
    result = preflight([*good, bad], adapter, on_bad_record="skip", workers=0)
    assert [r.id for r in result.records] == ["img", "text"] and sum(result.skips.counts.values()) == 1
    assert result.lengths == [adapter.encode(r).packed_length for r in good]
    with pytest.raises(PreflightError, match=r"record 2 \(id='two'\)"):
        preflight([*good, bad], adapter, on_bad_record="error", workers=0)


@pytest.mark.parametrize("name", ALL)
def test_generate_the_vlm_judge_and_the_lmms_plugin(zoo, name):
    """Two new tokens for a batch of a one-image and a text-only prompt equal each prompt alone (generate and
    lmms-eval's generate_until); the judge's margins and lmms-eval's loglikelihood equal the naive forward."""
    from mm_unidpo.evaluation.lmms.model import MMUniDPO
    from mm_unidpo.onpolicy.judges.vlm import VLMJudge

    model, processor = zoo(name)
    adapter = get_adapter(model, processor)
    photo = Image.open(IMAGES / "astronaut.png").convert("RGB")
    prompts = [adapter.render_prompt(r) for r in records()]
    images = [[photo], []]
    greedy = {"max_new_tokens": 2, "do_sample": False}
    batched = adapter.generate(model, prompts, images, **greedy)
    for row, (prompt, imgs) in enumerate(zip(prompts, images)):
        alone = adapter.generate(model, [prompt], [imgs], **greedy)[0]
        assert batched[row, : len(alone)].tolist() == alone.tolist()

    judge = VLMJudge(model, processor, batch_size=2)
    record = PreferenceRecord("<image>\nDescribe the image.", "", "", images=[photo])
    judgement = judge([(record, "An astronaut. A dog.")])[0]
    naive = []
    for claim in judgement["claims"]:
        encoded = judge.adapter.encode_prompt(judge.claim_prompt(record, claim))
        yes, no = (judge.adapter.response_ids(encoded, answer) for answer in ("Yes", "No"))
        naive.append(naive_logp(name, model, encoded, yes) - naive_logp(name, model, encoded, no))
    assert judgement["n_claims"] == 2 and judgement["margins"] == pytest.approx(naive, abs=1e-4)

    pytest.importorskip("lmms_eval")
    lm = MMUniDPO(model=model, processor=processor, device="cpu", batch_size=2)
    contexts = ["What is this?", "Say hello."]
    until = {"max_new_tokens": 2, "temperature": 0, "do_sample": False, "until": ["\n\n"]}
    assert lm.generate(contexts, images, until) == [lm.generate([c], [i], until)[0] for c, i in zip(contexts, images)]
    items = [(contexts[0], " An astronaut", images[0]), (contexts[1], " Hello", images[1])]
    for (context, continuation, imgs), (logp, _) in zip(items, lm.loglikelihoods(items)):
        prompt = lm.adapter.encode_prompt(lm.prompt(context, imgs))
        ids = lm._continuation_ids(prompt.text, continuation)
        assert logp == pytest.approx(naive_logp(name, model, prompt, ids), abs=1e-4)
