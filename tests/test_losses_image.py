"""Image-side terms (losses/image.py): mDPO and CHiP against the official code's values, a naive
per-example reference composed with every objective, float64 gradcheck, metrics and errors."""

from __future__ import annotations

import math

import pytest
import torch

from mm_unidpo.losses import LOSSES, PairLogps, ParamError, build_loss, preference_loss
from mm_unidpo.losses.image import chip_margin, mdpo_terms

D = torch.float64


def t(*values):
    return torch.tensor(values, dtype=D)


def official_pair() -> PairLogps:
    return PairLogps(
        policy_chosen=t(-4.0, -9.0, -20.5),
        policy_rejected=t(-6.0, -8.0, -19.0),
        chosen_lengths=t(2, 3, 7),
        rejected_lengths=t(3, 2, 6),
        reference_chosen=t(-3.0, -7.5, -21.0),
        reference_rejected=t(-4.5, -9.0, -18.0),
        policy_chosen_contrast=t(-5.0, -8.0, -26.0),
        reference_chosen_contrast=t(-4.0, -8.5, -24.0),
    )


# Values printed by the official code on official_pair() (run in a scratch folder, not vendored):
# luka-group/mDPO mdpo_trainer.py `mDPOTrainer.dpo_loss` (DPO + conditional + anchored, one β) and
# LVUGAI/CHiP llava/train/llava_trainer.py `chip_loss` (use_cross_modal_loss, no TDPO).
OFFICIAL = [
    ("mdpo", 0.1, [2.1060034886468024, 2.3950353370499675, 1.865356115681662]),
    ("mdpo", 0.5, [2.2431635846188955, 3.9520617749784956, 1.2147395073391163]),
    ("chip", 0.1, [0.6684596480132863, 0.9432489459974549, 0.5130152523999526]),
    ("chip", 0.5, [0.5759394198788436, 2.350206558916747, 0.1269280110429725]),
]


@pytest.mark.parametrize("term,beta,expected", OFFICIAL)
def test_matches_the_official_code(term, beta, expected):
    out = preference_loss("sigmoid", official_pair(), beta=beta, image_term=term, image_beta=beta)
    torch.testing.assert_close(out.per_pair, torch.tensor(expected, dtype=D), rtol=1e-13, atol=1e-13)


# ---- a naive per-example reference --------------------------------------------------------------------


def _logsig(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x > 0 else x - math.log1p(math.exp(x))


def random_pair(batch: int, seed: int, reference: bool = True) -> PairLogps:
    g = torch.Generator().manual_seed(seed)
    nw = torch.randint(1, 30, (batch,), generator=g).to(D)
    nl = torch.randint(1, 30, (batch,), generator=g).to(D)

    def logps(n):
        return -(torch.rand(batch, generator=g, dtype=D) * 2.0 + 0.05) * n

    return PairLogps(
        policy_chosen=logps(nw),
        policy_rejected=logps(nl),
        chosen_lengths=nw,
        rejected_lengths=nl,
        reference_chosen=logps(nw) if reference else None,
        reference_rejected=logps(nl) if reference else None,
        score_chosen=torch.rand(batch, generator=g, dtype=D) * 10,
        score_rejected=torch.rand(batch, generator=g, dtype=D) * 10,
        policy_chosen_contrast=logps(nw),
        reference_chosen_contrast=logps(nw) if reference else None,
    )


def naive_mdpo(
    pair: PairLogps, i: int, image_beta: float, image_weight: float, anchor_weight: float, delta: float
) -> float:
    f = {
        k: float(getattr(pair, k)[i]) if getattr(pair, k) is not None else 0.0
        for k in ("policy_chosen", "reference_chosen", "policy_chosen_contrast", "reference_chosen_contrast")
    }
    r_w = f["policy_chosen"] - f["reference_chosen"]
    r_c = f["policy_chosen_contrast"] - f["reference_chosen_contrast"]
    return -image_weight * _logsig(image_beta * (r_w - r_c)) - anchor_weight * _logsig(image_beta * r_w - delta)


MDPO = dict(image_beta=0.3, image_weight=0.7, anchor_weight=1.5, anchor_delta=-0.4)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_mdpo_adds_its_terms_to_every_objective(name):
    """per_pair(objective + mdpo) = per_pair(objective) + the naive terms, row by row."""
    reference = LOSSES[name].needs_reference
    pair = random_pair(8, seed=len(name), reference=reference)
    base = preference_loss(name, pair).per_pair
    out = preference_loss(name, pair, image_term="mdpo", **MDPO)
    expected = torch.tensor([naive_mdpo(pair, i, 0.3, 0.7, 1.5, -0.4) for i in range(8)], dtype=D)
    torch.testing.assert_close(out.per_pair - base, expected, rtol=1e-10, atol=1e-10)
    assert out.loss == pytest.approx(float(out.per_pair.mean()), rel=1e-12)


def naive_chip(name: str, pair: PairLogps, i: int, w: float) -> float:
    """The objective's own formula with the visual margin w·(r_w − r̃_w) added to Δ (÷|y_w| where it
    length-normalises), from its paper (see objectives.py / trl_types.py / unidpo.py), default params."""
    g = {
        k: float(getattr(pair, k)[i])
        for k in (
            "policy_chosen",
            "policy_rejected",
            "reference_chosen",
            "reference_rejected",
            "chosen_lengths",
            "rejected_lengths",
            "policy_chosen_contrast",
            "reference_chosen_contrast",
            "score_chosen",
            "score_rejected",
        )
    }
    nw, nl = g["chosen_lengths"], g["rejected_lengths"]
    r_w, r_l = g["policy_chosen"] - g["reference_chosen"], g["policy_rejected"] - g["reference_rejected"]
    m = w * (r_w - (g["policy_chosen_contrast"] - g["reference_chosen_contrast"]))
    beta = 0.1
    if name in ("dpo", "sigmoid"):
        return -_logsig(beta * (r_w - r_l + m))
    if name == "adadpo":
        c = min(2.0, math.exp(g["policy_chosen"] / nw - g["policy_rejected"] / nl))
        return -_logsig(beta * (c * r_w - r_l + m))
    if name == "sigmoid_norm":
        return -_logsig(beta * (r_w / nw - r_l / nl + m / nw))
    if name == "rdpo":
        return -_logsig(beta * (r_w - r_l + m) - 0.01 * (nw - nl))
    if name == "robust":  # ε = 0: DPO
        return -_logsig(beta * (r_w - r_l + m))
    z = beta * (r_w - r_l + m)
    if name == "exo_pair":
        eps = 1e-3
        qw, ql = math.exp(_logsig(z)), math.exp(_logsig(-z))
        return qw * (math.log(qw) - math.log(1 - eps)) + ql * (math.log(ql) - math.log(eps))
    if name == "discopop":
        mod = 1 / (1 + math.exp(-z / 0.05))
        return (1 - mod) * -_logsig(z) + mod * math.exp(-z)
    if name == "unidpo":
        b, lw, ll = 2.0, g["policy_chosen"] / nw, g["policy_rejected"] / nl
        rw, rl = g["reference_chosen"] / nw, g["reference_rejected"] / nl
        w_qual = 1 / (1 + math.exp(-0.7 * (g["score_chosen"] - g["score_rejected"])))
        w_perf = (1 - 1 / (1 + math.exp(-(b * (lw - ll) - 2.0)))) ** 3
        pref = -w_qual * w_perf * _logsig(b * ((lw - rw) - (ll - rl) + m / nw))
        gate = (1.0 if rw > lw else 0.0) * (1.0 if g["score_chosen"] >= 2.5 else 0.0)
        return pref - 0.001 * gate * lw
    raise AssertionError(name)


CHIP = sorted(name for name, objective in LOSSES.items() if objective.has_logit)


def test_chip_composes_with_the_sigmoid_objectives_only():
    assert CHIP == ["adadpo", "discopop", "dpo", "exo_pair", "rdpo", "robust", "sigmoid", "sigmoid_norm", "unidpo"]
    for name in sorted(set(LOSSES) - set(CHIP)):
        with pytest.raises(ParamError, match=f"image_term: '{name}' has no sigmoid logit"):
            preference_loss(name, random_pair(2, 0), image_term="chip")


@pytest.mark.parametrize("name", CHIP)
def test_chip_matches_naive_per_example_reference(name):
    pair = random_pair(8, seed=len(name))
    out = preference_loss(name, pair, image_term="chip", image_weight=0.6)
    expected = torch.tensor([naive_chip(name, pair, i, 0.6) for i in range(8)], dtype=D)
    torch.testing.assert_close(out.per_pair, expected, rtol=1e-10, atol=1e-10)


# ---- float64 gradcheck --------------------------------------------------------------------------------


def test_gradcheck_mdpo_terms_and_chip_margin():
    base = random_pair(5, seed=7)

    def fn(policy, reference, contrast, reference_contrast):
        pair = PairLogps(
            policy,
            base.policy_rejected,
            base.chosen_lengths,
            base.rejected_lengths,
            reference,
            base.reference_rejected,
            policy_chosen_contrast=contrast,
            reference_chosen_contrast=reference_contrast,
        )
        conditional, anchored = mdpo_terms(pair, 0.3, 0.2)
        return conditional, anchored, chip_margin(pair, 0.5)

    inputs = tuple(
        x.clone().requires_grad_(True)
        for x in (
            base.policy_chosen,
            base.reference_chosen,
            base.policy_chosen_contrast,
            base.reference_chosen_contrast,
        )
    )
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradcheck_every_objective_with_image_terms(name):
    """Through preference_loss, with respect to every log-prob an image term reads; adadpo's balance
    coefficient and bco_pair's δ are stop-gradient values of policy_chosen, so those two are checked
    with respect to the contrast log-probs only."""
    base = random_pair(3, seed=11)
    terms = ["mdpo", *(["chip"] if name in CHIP else [])]
    moving_policy = name not in ("adadpo", "bco_pair")

    def fn(policy, contrast, reference_contrast):
        pair = PairLogps(
            policy if moving_policy else base.policy_chosen,
            base.policy_rejected,
            base.chosen_lengths,
            base.rejected_lengths,
            base.reference_chosen,
            base.reference_rejected,
            base.score_chosen,
            base.score_rejected,
            policy_chosen_contrast=contrast,
            reference_chosen_contrast=reference_contrast,
        )
        return tuple(preference_loss(name, pair, image_term=term, **MDPO).per_pair for term in terms)

    inputs = tuple(
        x.clone().requires_grad_(True)
        for x in (base.policy_chosen, base.policy_chosen_contrast, base.reference_chosen_contrast)
    )
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, fast_mode=True)


# ---- metrics and errors -------------------------------------------------------------------------------


def test_contrast_metrics_by_hand():
    # r_w − r̃_w = (−4 + 3) − (−5 + 4) = 0 and (−9 + 7.5) − (−8 + 8.5) = −2 → β_img · that = 0, −1
    pair = PairLogps(
        t(-4.0, -9.0),
        t(-6.0, -8.0),
        t(2, 3),
        t(3, 2),
        t(-3.0, -7.5),
        t(-4.5, -9.0),
        policy_chosen_contrast=t(-5.0, -8.0),
        reference_chosen_contrast=t(-4.0, -8.5),
    )
    out = preference_loss("dpo", pair, image_term="mdpo", image_beta=0.5)
    assert out.metrics["rewards/contrast_margin"] == pytest.approx(-0.5)
    assert out.metrics["logps/chosen_contrast"] == pytest.approx(-6.5)
    torch.testing.assert_close(out.details["rewards/contrast_margin"], t(0.0, -1.0))
    chip = preference_loss("dpo", pair, beta=0.2, image_term="chip")
    assert chip.metrics["rewards/contrast_margin"] == pytest.approx(-0.2)  # the objective's β for chip
    assert "rewards/contrast_margin" not in preference_loss("dpo", pair).metrics


def test_missing_contrast_is_an_error_that_says_so():
    pair = random_pair(3, 0)
    no_contrast = PairLogps(
        pair.policy_chosen,
        pair.policy_rejected,
        pair.chosen_lengths,
        pair.rejected_lengths,
        pair.reference_chosen,
        pair.reference_rejected,
    )
    with pytest.raises(ValueError, match="image_term.*policy_chosen_contrast, reference_chosen_contrast is None"):
        preference_loss("dpo", no_contrast, image_term="mdpo")
    half = PairLogps(
        pair.policy_chosen,
        pair.policy_rejected,
        pair.chosen_lengths,
        pair.rejected_lengths,
        pair.reference_chosen,
        pair.reference_rejected,
        policy_chosen_contrast=pair.policy_chosen,
    )
    with pytest.raises(ValueError, match="reference_chosen_contrast is None"):
        preference_loss("unidpo", half, image_term="chip")
    preference_loss("dpo", no_contrast)  # without an image term the fields are not needed


def test_parameter_rules_and_mixtures():
    pair = random_pair(2, 0)
    with pytest.raises(ParamError, match=r"image_term must be one of null, 'mdpo', 'chip', got 'crop'"):
        preference_loss("dpo", pair, image_term="crop")
    with pytest.raises(ParamError, match="image_beta must be > 0, got 0"):
        preference_loss("dpo", pair, image_term="mdpo", image_beta=0)
    with pytest.raises(ParamError, match="loss.params.anchor_weight must be >= 0"):
        build_loss("dpo", {"image_term": "mdpo", "anchor_weight": -1})
    with pytest.raises(ParamError, match="image_term: mdpo cannot be shared"):
        build_loss(mixture=[{"name": "sigmoid"}, {"name": "sft"}], params={"image_term": "mdpo"})
    loss = build_loss(mixture=[{"name": "sigmoid", "params": {"image_term": "mdpo"}}, {"name": "sft"}])
    assert loss.needs_contrast and not build_loss("dpo").needs_contrast
    mixed = loss(pair)
    alone = preference_loss("sigmoid", pair, image_term="mdpo").loss + preference_loss("sft", pair).loss
    assert float(mixed.loss) == pytest.approx(float(alone), rel=1e-12)
