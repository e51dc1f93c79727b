"""The loss core against hand-computed values, a naive per-example reference, float64 autograd,
its reductions (DPO, TRL), the AdaDPO gradient identity, numerics and error messages."""

from __future__ import annotations

import importlib
import logging
import math

import pytest
import torch

from mm_unidpo.losses import LOSSES, PairLogps, preference_loss
unidpo_module = importlib.import_module("mm_unidpo.losses.unidpo")
from mm_unidpo.losses.balance import balance_coefficient


def t(*values, dtype=torch.float32):
    return torch.tensor(values, dtype=dtype)


# A tiny batch whose values are easy to follow by hand:
#   row 0: ℓ̄_w = −4/2 = −2,  ℓ̄_l = −6/3 = −2,  ℓ̄^ref_w = −3/2 = −1.5, ℓ̄^ref_l = −4.5/3 = −1.5
#          Δ = (−4 + 3) − (−6 + 4.5) = 0.5,  h = (−2 + 1.5) − (−2 + 1.5) = 0
#   row 1: ℓ̄_w = −3, ℓ̄_l = −4, ℓ̄^ref_w = −2.5, ℓ̄^ref_l = −4.5,  Δ = −2.5,  h = −1
def hand_pair(**overrides) -> PairLogps:
    fields = dict(
        policy_chosen=t(-4.0, -9.0), policy_rejected=t(-6.0, -8.0),
        chosen_lengths=t(2, 3), rejected_lengths=t(3, 2),
        reference_chosen=t(-3.0, -7.5), reference_rejected=t(-4.5, -9.0),
        score_chosen=t(9.0, 2.0), score_rejected=t(3.0, 1.0),
    )
    fields.update(overrides)
    return PairLogps(**fields)


# Expected per-pair values, worked out from the formulas with log σ(x) = −log(1 + e^−x):
HAND_CASES = [
    # dpo β=0.5: −log σ(0.25), −log σ(−1.25)
    ("dpo", dict(beta=0.5), [0.5759394198788436, 1.501929081345373]),
    # cDPO ε=0.1: −0.9·log σ(βΔ) − 0.1·log σ(−βΔ)
    ("dpo", dict(beta=0.5, label_smoothing=0.1), [0.6009394198788436, 1.376929081345373]),
    # length-normalised: −log σ(0.5·0) = log 2, −log σ(−0.5)
    ("dpo", dict(beta=0.5, length_normalize=True), [math.log(2), 0.9740769841801067]),
    # ipo β=0.5: (h − 1)²
    ("ipo", dict(beta=0.5), [1.0, 4.0]),
    # hinge β=0.5: relu(1 − 0.25), relu(1 + 1.25)
    ("hinge", dict(beta=0.5), [0.75, 2.25]),
    # rdpo β=0.5, α=0.2: −log σ(0.25 − 0.2·(2 − 3)), −log σ(−1.25 − 0.2·(3 − 2))
    ("rdpo", dict(beta=0.5, alpha=0.2), [0.4932489459974549, 1.6607229646697597]),
    # simpo β=2, γ=1: −log σ(2·0 − 1), −log σ(2·1 − 1)
    ("simpo", dict(beta=2.0, margin=1.0), [1.3132616875182228, 0.31326168751822286]),
    # cpo β=0.5, nll 1: −log σ(0.5·2) + 2, −log σ(0.5·(−1)) + 3
    ("cpo", dict(beta=0.5, nll_weight=1.0), [2.313261687518223, 3.9740769841801065]),
    # orpo β=0.5: 2 − 0.5·log σ(0) ; 3 − 0.5·log σ(odds(−3) − odds(−4)), odds(x) = x − log(1 − eˣ)
    ("orpo", dict(beta=0.5), [2.3465735902799727, 3.1523012088451865]),
    # unidpo β=2, η=0.7, γ=3, τ_ref=2, τ_good=2.5, λ=0.1:
    #   row 0: w_qual = σ(4.2) = 0.98523, w_perf = (1 − σ(−2))³ = 0.68333, pref = −w·log σ(0) ;
    #          gate open (ℓ̄^ref_w = −1.5 > −2 and S_w = 9 ≥ 2.5): + 0.1·2
    #   row 1: w_qual = σ(0.7), w_perf = (1 − σ(0))³ = 0.125, pref = −w·log σ(−2); gate shut (S_w = 2)
    ("unidpo", dict(beta=2.0, eta=0.7, gamma=3.0, tau_ref=2.0, tau_good=2.5, nll_weight=0.1),
     [0.6666474607719433, 0.17764841115760907]),
    # adadpo β=0.5, C=2: c_w = min(2, e^(ℓ̄_w − ℓ̄_l)) = 1, 2 → −log σ(0.5(1·(−1) + 1.5)), −log σ(0.5(2·(−1.5) − 1))
    ("adadpo", dict(beta=0.5), [0.5759394198788436, 2.1269280110429727]),
    # dpo with balance in ratio space: c_w = min(2, e^h) = 1, e^−1
    ("dpo", dict(beta=0.5, balance="ratio"), [0.5759394198788436, 1.1545411510999735]),
]


@pytest.mark.parametrize("name,params,expected", HAND_CASES, ids=lambda v: v if isinstance(v, str) else None)
def test_hand_computed_values(name, params, expected):
    out = preference_loss(name, hand_pair(), **params)
    assert out.per_pair.dtype == torch.float32
    torch.testing.assert_close(out.per_pair, t(*expected), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out.loss, torch.tensor(sum(expected) / 2), rtol=1e-6, atol=1e-6)


def test_unidpo_weights_and_metrics_by_hand():
    out = preference_loss("unidpo", hand_pair(), beta=2.0, eta=0.7, gamma=3.0, tau_ref=2.0, tau_good=2.5,
                          nll_weight=0.1)
    torch.testing.assert_close(out.details["weights/quality"], t(1 / (1 + math.exp(-4.2)), 1 / (1 + math.exp(-0.7))))
    torch.testing.assert_close(out.details["weights/perf"], t((1 - 1 / (1 + math.exp(2.0))) ** 3, 0.125))
    assert out.metrics["nll/active_fraction"] == pytest.approx(0.5)
    assert out.metrics["loss/nll"] == pytest.approx((0.1 * 2.0 + 0.0) / 2)
    # rewards are β(ℓ̄ − ℓ̄^ref): row 0: 2(−2 + 1.5) = −1 and 2(−2 + 1.5) = −1; row 1: −1 and 1
    assert out.metrics["rewards/chosen"] == pytest.approx(-1.0)
    assert out.metrics["rewards/rejected"] == pytest.approx(0.0)
    assert out.metrics["rewards/margins"] == pytest.approx(-1.0)
    assert out.metrics["rewards/accuracies"] == pytest.approx(0.0)
    assert out.metrics["logps/chosen"] == pytest.approx(-6.5)
    assert out.metrics["logps/rejected"] == pytest.approx(-7.0)


def test_balance_metrics_by_hand():
    out = preference_loss("adadpo", hand_pair(), beta=0.5)
    assert out.metrics["balance/coef_mean"] == pytest.approx(1.5)
    assert out.metrics["balance/clipped_fraction"] == pytest.approx(0.5)


# ---- a naive per-example reference, in Python floats -------------------------------------------------

def _logsig(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x > 0 else x - math.log1p(math.exp(x))


def naive_loss(name: str, row: dict, p: dict, balance=None, clip=2.0) -> float:
    lw, ll = row["Lw"] / row["nw"], row["Ll"] / row["nl"]
    rw = row["Rw"] / row["nw"] if "Rw" in row else None
    rl = row["Rl"] / row["nl"] if "Rl" in row else None
    c = 1.0
    if balance == "policy":
        c = min(clip, math.exp(lw - ll))
    elif balance == "ratio":
        c = min(clip, math.exp((lw - rw) - (ll - rl)))
    b = p.get("beta")
    if name in ("dpo", "hinge", "rdpo"):
        if p.get("length_normalize"):
            cw, cl = lw - rw, ll - rl
        else:
            cw, cl = row["Lw"] - row["Rw"], row["Ll"] - row["Rl"]
        z = b * (c * cw - cl)
        if name == "dpo":
            eps = p.get("label_smoothing", 0.0)
            return -(1 - eps) * _logsig(z) - eps * _logsig(-z)
        if name == "hinge":
            return max(0.0, 1 - z)
        return -_logsig(z - p["alpha"] * (row["nw"] - row["nl"]))
    if name == "ipo":
        return (c * (lw - rw) - (ll - rl) - 1 / (2 * b)) ** 2
    if name == "simpo":
        return -_logsig(b * (c * lw - ll) - p["margin"])
    if name == "cpo":
        return -_logsig(b * (c * row["Lw"] - row["Ll"])) - p["nll_weight"] * lw
    if name == "orpo":
        odds = lambda x: x - math.log(1 - math.exp(x))  # noqa: E731
        return -lw - b * _logsig(c * odds(lw) - odds(ll))
    if name == "unidpo":
        w_qual = 1 / (1 + math.exp(-p["eta"] * (row["Sw"] - row["Sl"])))
        w_perf = (1 - 1 / (1 + math.exp(-(b * (lw - ll) - p["tau_ref"])))) ** p["gamma"]
        pref = -w_qual * w_perf * _logsig(b * (c * (lw - rw) - (ll - rl)))
        gate = (1.0 if rw > lw else 0.0) * (1.0 if row["Sw"] >= p["tau_good"] else 0.0)
        return pref - p["nll_weight"] * gate * lw
    raise AssertionError(name)


NAIVE_PARAMS = {
    "dpo": dict(beta=0.3, label_smoothing=0.05),
    "ipo": dict(beta=0.4),
    "hinge": dict(beta=0.05),
    "rdpo": dict(beta=0.3, alpha=0.02),
    "simpo": dict(beta=2.0, margin=1.0),
    "cpo": dict(beta=0.2, nll_weight=0.5),
    "orpo": dict(beta=0.25),
    "unidpo": dict(beta=2.0, eta=0.7, gamma=3.0, tau_ref=2.0, tau_good=5.0, nll_weight=0.2),
}


def random_pair(batch: int, seed: int, dtype=torch.float64, requires_grad=False) -> PairLogps:
    g = torch.Generator().manual_seed(seed)
    nw = torch.randint(1, 40, (batch,), generator=g).to(dtype)
    nl = torch.randint(1, 40, (batch,), generator=g).to(dtype)

    def logps(n):
        return (-(torch.rand(batch, generator=g, dtype=dtype) * 2.5 + 0.05) * n).requires_grad_(requires_grad)

    return PairLogps(
        policy_chosen=logps(nw), policy_rejected=logps(nl), chosen_lengths=nw, rejected_lengths=nl,
        reference_chosen=logps(nw).detach(), reference_rejected=logps(nl).detach(),
        score_chosen=torch.rand(batch, generator=g, dtype=dtype) * 10,
        score_rejected=torch.rand(batch, generator=g, dtype=dtype) * 10,
    )


def _rows(pair: PairLogps) -> list[dict]:
    keys = dict(Lw="policy_chosen", Ll="policy_rejected", nw="chosen_lengths", nl="rejected_lengths",
                Rw="reference_chosen", Rl="reference_rejected", Sw="score_chosen", Sl="score_rejected")
    return [{k: float(getattr(pair, f)[i]) for k, f in keys.items()} for i in range(pair.batch_size)]


@pytest.mark.parametrize("balance", [None, "policy", "ratio"])
@pytest.mark.parametrize("name", sorted(NAIVE_PARAMS))
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_naive_per_example_reference(name, balance, seed):
    pair = random_pair(16, seed)
    params = NAIVE_PARAMS[name]
    extra = {"length_normalize": True} if (name == "dpo" and seed == 1) else {}
    out = preference_loss(name, pair, balance=balance, **params, **extra)
    expected = [naive_loss(name, row, {**params, **extra}, balance) for row in _rows(pair)]
    torch.testing.assert_close(out.per_pair, torch.tensor(expected, dtype=torch.float64), rtol=1e-10, atol=1e-10)


# ---- float64 gradcheck ------------------------------------------------------------------------------

@pytest.mark.parametrize("balance", [None, "policy", "ratio"])
@pytest.mark.parametrize("name", sorted(NAIVE_PARAMS))
def test_gradcheck_float64(name, balance):
    base = random_pair(6, seed=3)
    params = NAIVE_PARAMS[name]
    # AdaDPO's coefficient is a stop-gradient: hold it fixed (computed from the base point) so the
    # analytic gradient of the surrogate can be checked against finite differences.
    scale = 1.0 if balance is None else balance_coefficient(base, balance, 2.0)

    def fn(policy_chosen, policy_rejected, reference_chosen, reference_rejected):
        pair = PairLogps(policy_chosen, policy_rejected, base.chosen_lengths, base.rejected_lengths,
                         reference_chosen, reference_rejected, base.score_chosen, base.score_rejected)
        return LOSSES[name].fn(pair, scale, **params).per_pair

    inputs = tuple(x.clone().requires_grad_(True) for x in (
        base.policy_chosen, base.policy_rejected, base.reference_chosen, base.reference_rejected))
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7)


def test_gradcheck_through_preference_loss_without_balance():
    pair = random_pair(5, seed=4, requires_grad=True)

    def fn(policy_chosen, policy_rejected):
        p = PairLogps(policy_chosen, policy_rejected, pair.chosen_lengths, pair.rejected_lengths,
                      pair.reference_chosen, pair.reference_rejected, pair.score_chosen, pair.score_rejected)
        return preference_loss("unidpo", p, nll_weight=0.3).loss

    assert torch.autograd.gradcheck(fn, (pair.policy_chosen, pair.policy_rejected))


# ---- reductions and identities ------------------------------------------------------------------------

def test_unidpo_reduces_to_length_normalised_dpo():
    pair = random_pair(32, seed=5)
    no_scores = PairLogps(**{**pair.__dict__, "score_chosen": None, "score_rejected": None})
    uni = preference_loss("unidpo", no_scores, beta=2.0, gamma=0.0, nll_weight=0.0)
    dpo = preference_loss("dpo", no_scores, beta=2.0, length_normalize=True)
    torch.testing.assert_close(uni.per_pair, dpo.per_pair, rtol=1e-12, atol=1e-12)


def test_unidpo_logs_missing_scores_once(caplog, monkeypatch):
    monkeypatch.setattr(unidpo_module, "_warned_no_scores", False)
    pair = random_pair(4, seed=6)
    no_scores = PairLogps(**{**pair.__dict__, "score_chosen": None, "score_rejected": None})
    with caplog.at_level(logging.WARNING):
        preference_loss("unidpo", no_scores)
        preference_loss("unidpo", no_scores)
    assert sum("no quality scores" in r.message for r in caplog.records) == 1


def test_unidpo_perf_weight_carries_gradient_unless_detached():
    pair = random_pair(8, seed=7, requires_grad=True)
    (g_official,) = torch.autograd.grad(preference_loss("unidpo", pair).loss, pair.policy_chosen)
    (g_detached,) = torch.autograd.grad(preference_loss("unidpo", pair, detach_perf_weight=True).loss,
                                        pair.policy_chosen)
    assert not torch.allclose(g_official, g_detached)


@pytest.mark.parametrize("space", ["policy", "ratio"])
@pytest.mark.parametrize("length_normalize", [False, True])
def test_adadpo_balances_the_two_pushes(space, length_normalize):
    """For dpo with balance: ∂loss/∂L_w = −c_w · ∂loss/∂L_l, row by row (the paper's construction)."""
    pair = random_pair(12, seed=8, requires_grad=True)
    out = preference_loss("dpo", pair, beta=0.2, balance=space, length_normalize=length_normalize)
    g_w, g_l = torch.autograd.grad(out.per_pair.sum(), (pair.policy_chosen, pair.policy_rejected))
    coef = out.details["balance/coef"]
    if length_normalize:  # the identity holds for the mean log-probs the objective then uses
        g_w, g_l = g_w * pair.chosen_lengths, g_l * pair.rejected_lengths
    torch.testing.assert_close(g_w, -coef * g_l, rtol=1e-12, atol=1e-14)
    assert (coef <= 2.0).all() and (coef < 2.0).any()


def test_dpo_matches_trl_sigmoid_loss():
    """TRL's own DPOTrainer._compute_loss on the same per-token log-probs (stub model, TRL's code)."""
    trl_dpo = pytest.importorskip("trl.trainer.dpo_trainer")
    from tests.trl_stub import run_trl_dpo_loss

    pair = random_pair(8, seed=9, dtype=torch.float32)
    beta = 0.1
    trl_loss, trl_metrics = run_trl_dpo_loss(trl_dpo.DPOTrainer, pair, beta=beta)
    ours = preference_loss("dpo", pair, beta=beta)
    torch.testing.assert_close(ours.loss, trl_loss, rtol=1e-5, atol=1e-6)
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                "logps/chosen", "logps/rejected"):
        assert ours.metrics[key] == pytest.approx(trl_metrics[key], rel=1e-5, abs=1e-6), key


# ---- numerics -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("balance", [None, "policy"])
def test_extreme_inputs_stay_finite(name, balance):
    lengths = t(1, 100000, 1, 7)
    pair = PairLogps(
        policy_chosen=t(-1e4, -1e4, -1e-3, -50.0, dtype=torch.float32).requires_grad_(True),
        policy_rejected=t(-1e-3, -1e4, -1e4, -0.5).requires_grad_(True),
        chosen_lengths=lengths, rejected_lengths=t(1, 1, 100000, 3),
        reference_chosen=t(-1e4, -5.0, -1e4, -45.0), reference_rejected=t(-2.0, -1e4, -3.0, -1e4),
        score_chosen=t(10.0, 0.0, 5.0, 3.0), score_rejected=t(0.0, 10.0, 5.0, 1.0),
    )
    if balance is not None and "balance" in LOSSES[name].refuses:
        pytest.skip(f"{name} refuses balance")
    params = {"balance": balance} if name != "adadpo" else {}
    out = preference_loss(name, pair, **params)
    assert torch.isfinite(out.per_pair).all(), out.per_pair
    out.loss.backward()
    assert torch.isfinite(pair.policy_chosen.grad).all()
    # sft reads only the chosen responses: no gradient reaches the rejected ones
    assert (name == "sft" and pair.policy_rejected.grad is None) or torch.isfinite(pair.policy_rejected.grad).all()
    assert all(math.isfinite(v) for v in out.metrics.values())


def test_orpo_mean_logprob_of_zero_stays_finite():
    pair = PairLogps(t(0.0, -1.0), t(-2.0, 0.0), t(3, 1), t(2, 1))
    out = preference_loss("orpo", pair)
    assert torch.isfinite(out.per_pair).all()


def test_bf16_inputs_are_computed_in_float32():
    pair = random_pair(8, seed=10, dtype=torch.float32)
    bf16 = PairLogps(**{k: (v.to(torch.bfloat16) if v is not None else None) for k, v in pair.__dict__.items()})
    out = preference_loss("unidpo", bf16)
    assert out.per_pair.dtype == torch.float32
    # the same numbers as float32 inputs holding the bf16-rounded values
    rounded = PairLogps(**{k: (v.to(torch.bfloat16).float() if v is not None else None)
                           for k, v in pair.__dict__.items()})
    torch.testing.assert_close(out.per_pair, preference_loss("unidpo", rounded).per_pair)


def test_batch_of_one_and_length_one():
    pair = PairLogps(t(-0.7), t(-2.3), t(1), t(1), t(-1.0), t(-2.0), t(4.0), t(1.0))
    for name in LOSSES:
        out = preference_loss(name, pair)
        assert out.per_pair.shape == (1,) and out.loss.shape == ()
        assert out.loss.item() == pytest.approx(out.per_pair.item())


def test_loss_is_mean_of_per_pair():
    out = preference_loss("simpo", random_pair(9, seed=11))
    assert out.loss.item() == pytest.approx(out.per_pair.mean().item(), rel=1e-12)


# ---- errors -------------------------------------------------------------------------------------------

def test_length_below_one_names_field_and_rows():
    ones = t(-1.0, -1.0, -1.0, -1.0)
    pair = PairLogps(ones, ones, t(1, 1, 1, 1), t(1, 0, 2, -3), ones, ones)
    with pytest.raises(ValueError, match=r"rejected_lengths must be >= 1.*rows \[1, 3\]"):
        preference_loss("dpo", pair)


def test_shape_mismatch_names_field():
    with pytest.raises(ValueError, match=r"shape mismatch: reference_rejected has shape \(3,\)"):
        preference_loss("dpo", hand_pair(reference_rejected=t(1.0, 2.0, 3.0)))
    with pytest.raises(ValueError, match=r"chosen_lengths must have shape \(B,\)"):
        preference_loss("simpo", hand_pair(chosen_lengths=torch.ones(2, 1)))


def test_nan_score_names_field_and_rows():
    with pytest.raises(ValueError, match=r"score_rejected is NaN or infinite in rows \[1\]"):
        preference_loss("unidpo", hand_pair(score_rejected=t(1.0, float("nan"))))


def test_nan_logp_names_field_and_rows():
    with pytest.raises(ValueError, match=r"policy_rejected is NaN in rows \[0\]"):
        preference_loss("simpo", hand_pair(policy_rejected=t(float("nan"), -1.0)))


def test_missing_reference_is_an_error_only_where_needed():
    no_ref = hand_pair(reference_chosen=None, reference_rejected=None)
    for name, objective in LOSSES.items():
        if objective.needs_reference:
            with pytest.raises(ValueError, match=rf"objective '{name}' needs reference log-probs"):
                preference_loss(name, no_ref)
        else:
            assert torch.isfinite(preference_loss(name, no_ref).loss)
    with pytest.raises(ValueError, match="balance='ratio' needs reference"):
        preference_loss("simpo", no_ref, balance="ratio")


def test_one_score_only_is_an_error():
    with pytest.raises(ValueError, match="only score_chosen was given"):
        preference_loss("unidpo", hand_pair(score_rejected=None))


def test_unknown_objective_and_parameter():
    with pytest.raises(ValueError, match="unknown objective 'dpp'"):
        preference_loss("dpp", hand_pair())
    with pytest.raises(ValueError, match=r"objective 'simpo' has no parameter\(s\) \['eta'\]"):
        preference_loss("simpo", hand_pair(), eta=0.7)
    with pytest.raises(ValueError, match="balance must be one of"):
        preference_loss("dpo", hand_pair(), balance="both")


def test_registry_parameters_list_defaults():
    assert LOSSES["adadpo"].parameters()["balance"] == "policy"
    uni = LOSSES["unidpo"].parameters()
    assert (uni["beta"], uni["eta"], uni["gamma"], uni["tau_ref"], uni["tau_good"], uni["nll_weight"]) == (
        2.0, 0.7, 3.0, 2.0, 2.5, 0.001)
    assert uni["detach_perf_weight"] is False
    assert LOSSES["simpo"].parameters()["margin"] == 1.0
