"""DDPO's token weights (models/token_weights.py): the differing tokens by hand, and the weighted sums of
a packed and a plain batch against a naive one-example forward, token by token."""

from __future__ import annotations

import pytest
import torch

from mm_unidpo.data import PreferenceRecord, Prompt
from mm_unidpo.data.corruption import Corruption, contrast_images
from mm_unidpo.models.token_weights import differing
from mm_unidpo.testing import tiny

from .helpers import IMAGES, make_adapter, naive_logp, need_images
from .helpers import one_thread  # noqa: F401  (autouse)


def test_differing_tokens_by_hand():
    # common runs [1 2 3] and [5 6 7] (>= 3 tokens) are kept; 4 and 9 differ
    assert differing([1, 2, 3, 4, 5, 6, 7], [1, 2, 3, 9, 5, 6, 7]) == (
        [False, False, False, True, False, False, False],
        [False, False, False, True, False, False, False],
    )
    # a common run of 2 is too short: everything around the long run differs
    assert differing([8, 8, 1, 2, 3], [7, 8, 8, 0, 1, 2, 3]) == (
        [True, True, False, False, False],
        [True, True, True, True, False, False, False],
    )
    assert differing([1, 2], [3]) == ([True, True], [True])


def _naive_weighted(family, model, prompt, response, weights):
    """Σ_t w_t log p(y_t | ...), each token's log-prob from a naive forward of the prefix up to it."""
    total, before = 0.0, 0.0
    for k, w in enumerate(weights):
        upto = naive_logp(family, model, prompt, response[: k + 1])
        total += w * (upto - before)
        before = upto
    return total


@pytest.mark.parametrize("family,layout", [("llava", "packed"), ("qwen2_vl", "plain-right")])
def test_weighted_sums_equal_a_naive_forward(family, layout):
    need_images("astronaut.png")
    model, processor = tiny(family)
    record = PreferenceRecord(
        "<image>\nWhat is in the image?",
        "An astronaut in a white suit on the moon.",
        "A horse in a white suit on the moon.",
        images=["astronaut.png"],
        image_root=str(IMAGES),
        id="a",
        index=0,
    )
    corruption = Corruption("blank")
    adapter = make_adapter(
        model, processor, layout, token_weight=4.0, contrast_views=lambda r: contrast_images(r, corruption, [r])
    )
    plain = make_adapter(model, processor, layout)
    with torch.no_grad():
        out = adapter.sequence_logps(model, adapter.collate([record]))
        unweighted = plain.sequence_logps(model, plain.collate([record]))
    encoded = adapter.encode(record)
    chosen_diff, rejected_diff = differing(encoded.chosen_ids, encoded.rejected_ids)
    assert any(chosen_diff) and not all(chosen_diff)  # "An astronaut" vs "A horse": a few tokens differ
    w_chosen = [4.0 if d else 1.0 for d in chosen_diff]
    w_rejected = [4.0 if d else 1.0 for d in rejected_diff]
    view = adapter.encode_prompt(Prompt(record.prompt, contrast_images(record, corruption, [record]), "a", 0))
    expected = [
        _naive_weighted(family, model, encoded, encoded.chosen_ids, w_chosen),
        _naive_weighted(family, model, encoded, encoded.rejected_ids, w_rejected),
        _naive_weighted(family, model, view, encoded.chosen_ids, w_chosen),
    ]
    got = [float(out.chosen_logps[0]), float(out.rejected_logps[0]), float(out.chosen_contrast[0])]
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-4)
    assert torch.equal(out.chosen_lengths, unweighted.chosen_lengths)  # lengths stay token counts
    assert float(out.chosen_logps[0]) < float(unweighted.chosen_logps[0])  # w > 1 on negative log-probs


def test_token_weight_is_checked_and_fingerprinted():
    from mm_unidpo.train.reference import adapter_fingerprint

    model, processor = tiny("llava")
    with pytest.raises(ValueError, match="token_weight must be > 0"):
        make_adapter(model, processor, token_weight=0.0)
    a, b = make_adapter(model, processor), make_adapter(model, processor, token_weight=4.0)
    assert adapter_fingerprint(a)["settings"]["token_weight"] is None
    assert adapter_fingerprint(b)["settings"]["token_weight"] == 4.0


def test_config_key_is_checked():
    from mm_unidpo.train.config import ConfigError, config_from_dict

    raw = {"model": {"name_or_path": "x", "token_weight": -1.0}, "data": {"train": "d"}, "train": {"output_dir": "o"}}
    with pytest.raises(ConfigError, match=r"model.token_weight must be > 0 \(DDPO's weight; 4 in RLHF-V\)"):
        config_from_dict(raw).validate()
    raw["model"]["token_weight"] = 4.0
    assert config_from_dict(raw).validate().model.token_weight == 4.0
