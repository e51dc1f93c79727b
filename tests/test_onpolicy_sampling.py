"""One prefill per prompt (`mm_unidpo.onpolicy.sampling`) on tiny models of every family: greedy tokens and
every step's logits equal transformers' `generate` on the prompts repeated n times (what
`num_return_sequences=n` runs, which transformers refuses for greedy decoding); the prefill runs once per
prompt, not once per sample; a family with its own generation path falls back and says so; micro-batches
stay within the token budget. The VLM judge's margins from one prefill per image equal one forward per claim.
(Seeded sampling against `num_return_sequences` itself, and log-probs against
a teacher-forced forward: test_onpolicy_generate.py, which goes through this path.)"""

from __future__ import annotations

import logging

import pytest
import torch
from PIL import Image

from mm_unidpo.models import get_adapter
from mm_unidpo.onpolicy import sampling
from mm_unidpo.onpolicy.judges import VLMJudge
from mm_unidpo.onpolicy.judges.prefix import shares_prefix
from mm_unidpo.onpolicy.records import PromptRecord
from mm_unidpo.onpolicy.sampling import fallback_reason, generate_n, micro_batches
from mm_unidpo.testing import available_families, tiny

pytestmark = pytest.mark.usefixtures("single_thread")

GREEDY = dict(
    max_new_tokens=4,
    do_sample=False,
    temperature=None,
    top_p=None,
    top_k=None,
    return_dict_in_generate=True,
    output_logits=True,
)


def _prompts(adapter, family: str) -> tuple[list[str], list[list[Image.Image]]]:
    """Two prompts of different lengths (left padding) with differently sized images."""
    text = family == "causal_lm"
    records = [
        PromptRecord(
            ("" if text else "<image>\n") + ("Describe it." if k else "What is shown in this picture?"),
            [] if text else [Image.new("RGB", (40 + 16 * k, 32), (60 * k, 90, 200))],
            f"p{k}",
            k,
            None,
        )
        for k in range(2)
    ]
    return [adapter.render_prompt(r) for r in records], [r.images for r in records]


@pytest.mark.parametrize("family", available_families())
def test_greedy_equals_generate_on_repeated_prompts(family, caplog):
    model, processor = tiny(family)
    model.eval()
    adapter = get_adapter(model, processor)
    texts, images = _prompts(adapter, family)
    n = 2
    calls = []
    hook = model.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append(
            kwargs["input_ids"].shape if kwargs.get("input_ids") is not None else None
        ),
        with_kwargs=True,
    )
    with caplog.at_level(logging.INFO, logger=sampling.__name__):
        ours = generate_n(adapter, model, texts, images, n, **GREEDY)
    hook.remove()
    reference = adapter.generate(
        model, [t for t in texts for _ in range(n)], [i for i in images for _ in range(n)], **GREEDY
    )
    assert torch.equal(ours.sequences, reference.sequences)
    diff = max((a - b).abs().max().item() for a, b in zip(ours.logits, reference.logits))
    assert diff < 1e-4, diff
    reason = fallback_reason(adapter, model)
    if reason is None:  # the prefill: 2 rows, the prompts but their last token; then 4 rows, one token each
        assert calls[0] is not None and calls[0][0] == 2 and calls[1] is not None and tuple(calls[1]) == (4, 1)
        assert "one prefill per sample" not in caplog.text
    else:
        assert (
            family == "llava_orig"
            and "one prefill per sample (the family generates through its own path)" in caplog.text
        )


def test_micro_batches_stay_within_the_budget():
    lengths = [50, 40, 40, 30, 10]
    runs = micro_batches(lengths, n=2, new_tokens=10, budget=300)  # 2 rows x 60 = 120 per prompt of 50
    assert runs == [[0, 1], [2, 3, 4]]
    for run in runs:
        assert len(run) == 1 or len(run) * 2 * (max(lengths[i] for i in run) + 10) <= 300
    assert micro_batches(lengths, n=2, new_tokens=10, budget=None) == [[0, 1, 2, 3, 4]]
    assert micro_batches([500, 10], n=1, new_tokens=0, budget=100) == [[0], [1]]  # over the budget alone


# ---- the VLM judge: one prefill per image ----------------------------------------------------------------


@pytest.mark.parametrize("family", [f for f in available_families() if f != "causal_lm"])
def test_judge_margins_from_one_prefill_per_image_equal_one_forward_per_claim(family):
    """Two images, claims of several samples each: the margins from the shared prefix equal one forward per
    claim; the images go through the model once per image (one forward with vision inputs), or the family
    falls back to one forward per claim."""
    model, processor = tiny(family)
    judge = VLMJudge(model, processor, batch_size=2)  # rows of 4: several suffix batches per image
    records = [
        PromptRecord("<image>\nDescribe.", [Image.new("RGB", (40 + 16 * k, 32), (60 * k, 90, 200))], f"r{k}", k, None)
        for k in range(2)
    ]
    claims = ["A dog sits on a red sofa.", "The sky is blue.", "There are two cats", "It is a very sunny day outside."]
    questions = [judge.claim_prompt(r, c) for r in records for c in claims]
    vision_calls = []
    hook = model.register_forward_pre_hook(
        lambda module, args, kwargs: vision_calls.append(
            any(k in kwargs and kwargs[k] is not None for k in ("pixel_values", "images"))
        ),
        with_kwargs=True,
    )
    shared = judge.margins(questions)
    hook.remove()
    one_by_one = judge.margins_one_by_one(questions)
    assert shared == pytest.approx(one_by_one, abs=1e-4)
    assert max(map(abs, one_by_one)) > 1e-3  # margins that say something
    if shares_prefix(judge.adapter):
        assert sum(vision_calls) == 2 and len(vision_calls) == 2 + 2 * 2  # per image: a prefill, 2 batches of 4
    else:
        assert family in ("llava_orig", "mllama")
