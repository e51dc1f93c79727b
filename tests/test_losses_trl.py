"""TRL's loss types, options and mixtures: equal to TRL 1.16's own `_compute_loss` on the same inputs
(values and gradients), float64 gradcheck of each, their parameter rules, bco_pair's running δ, and
`mm-unidpo losses`. The table of differences: `python -m tests.trl_stub`."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from mm_unidpo.losses import LOSSES, PRESETS, PairLogps, ParamError, build_loss, check_loss, preference_loss
from mm_unidpo.losses.balance import balance_coefficient
from mm_unidpo.losses.core import compute
from mm_unidpo.losses.registry import check_params
from tests.test_losses import random_pair
from tests.trl_stub import cases, compare

pytest.importorskip("trl.trainer.dpo_trainer")
CASES = cases()


@pytest.mark.parametrize("case", CASES, ids=[c.label for c in CASES])
def test_equals_trl_values_and_gradients(case):
    # float64 agrees to rounding; exo_pair's ε is a float32 tensor inside TRL (log ε rounded there);
    # the alpha-divergence runs in float32 (TRL's clamp table has no float64).
    tol = 1e-5 if case.dtype == torch.float32 else 1e-7 if "exo_pair" in case.label else 1e-10
    for seed in (0, 1):
        diff = compare(case, batch=12, seed=seed)
        scale = max(1.0, abs(diff["loss"]))
        assert diff["value"] <= tol * scale, diff
        assert diff["grad"] <= tol * scale, diff
        if case.same_metrics:  # rewards β·r, accuracies, margins and log-prob sums as TRL logs them
            assert diff["metrics"] <= (1e-4 if case.dtype == torch.float32 else 1e-9), diff


def test_every_trl_loss_type_is_covered():
    from trl.trainer.dpo_config import DPOConfig

    doc = DPOConfig.__doc__ or ""
    trl_types = {"sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
                 "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm"}
    assert all(f"'{t}'" in doc for t in trl_types)  # TRL still names exactly these
    assert trl_types <= set(LOSSES)
    assert trl_types <= {c.label.split()[0] for c in CASES}


# ---- float64 gradcheck ------------------------------------------------------------------------------

NEW = ["sigmoid", "sigmoid_norm", "robust", "exo_pair", "nca_pair", "bco_pair", "sppo_hard", "aot", "aot_unpaired",
       "apo_zero", "apo_down", "discopop", "sft"]
F_OPTIONS = [{"f_divergence_type": "forward_kl"}, {"f_divergence_type": "js_divergence"},
             {"f_divergence_type": "alpha_divergence", "f_alpha_divergence_coef": 0.3}]


def _small_ratio_pair(batch: int, seed: int) -> PairLogps:
    """Log-ratios within a few units, where forward-KL and alpha-divergence scores stay moderate."""
    base = random_pair(batch, seed)
    g = torch.Generator().manual_seed(seed + 100)
    shift = lambda x: x + torch.rand(batch, generator=g, dtype=x.dtype) * 4 - 2  # noqa: E731
    return PairLogps(base.policy_chosen, base.policy_rejected, base.chosen_lengths, base.rejected_lengths,
                     shift(base.policy_chosen), shift(base.policy_rejected), base.score_chosen, base.score_rejected)


def _gradcheck(name: str, params: dict, balance: str | None = None, **fields) -> None:
    base = _small_ratio_pair(6, seed=3)
    values = check_params(name, {**params, **({"balance": balance} if balance else {})}, where="")
    if balance:  # AdaDPO's coefficient is a stop-gradient: held at the base point
        scale = balance_coefficient(base, balance, 2.0)
        values = {k: v for k, v in values.items() if k not in ("balance", "balance_clip")}

    def fn(policy_chosen, policy_rejected, reference_chosen, reference_rejected):
        pair = PairLogps(policy_chosen, policy_rejected, base.chosen_lengths, base.rejected_lengths,
                         reference_chosen, reference_rejected, base.score_chosen, base.score_rejected,
                         **{k: f(policy_chosen, policy_rejected, reference_chosen, reference_rejected)
                            for k, f in fields.items()})
        if balance:
            params_only = {k: v for k, v in values.items() if k in LOSSES[name].own_parameters()}
            return LOSSES[name].fn(pair, scale, **params_only).per_pair
        return compute(name, pair, values).per_pair

    inputs = tuple(x.clone().requires_grad_(True) for x in (
        base.policy_chosen, base.policy_rejected, base.reference_chosen, base.reference_rejected))
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", NEW)
def test_gradcheck_float64(name):
    _gradcheck(name, {"running_mean": False} if name == "bco_pair" else {})


@pytest.mark.parametrize("name", ["sigmoid", "robust", "exo_pair", "discopop"])
@pytest.mark.parametrize("balance", ["policy", "ratio"])
def test_gradcheck_float64_with_balance(name, balance):
    _gradcheck(name, {}, balance=balance)


@pytest.mark.parametrize("f", F_OPTIONS, ids=lambda f: f["f_divergence_type"])
@pytest.mark.parametrize("name", ["sigmoid", "sigmoid_norm", "hinge", "ipo", "robust", "exo_pair", "discopop"])
def test_gradcheck_float64_f_divergences(name, f):
    _gradcheck(name, f)


def _shared(short_of):  # the first min(n_w, n_l) tokens hold that share of an evenly spread sum
    base = _small_ratio_pair(6, seed=3)
    short = torch.minimum(base.chosen_lengths, base.rejected_lengths)
    lengths = {"c": base.chosen_lengths, "r": base.rejected_lengths}
    return lambda *xs: xs[short_of[0]] * short / lengths[short_of[1]]


@pytest.mark.parametrize("name,params", [
    ("sigmoid", {"ld_alpha": 0.4}), ("bco_pair", {"ld_alpha": 0.4, "running_mean": False}),
    ("sigmoid", {"use_weighting": True}), ("apo_zero", {"use_weighting": True}),
    ("sigmoid", {"rpo_alpha": 0.7}), ("unidpo", {"rpo_alpha": 0.2}),
    ("robust", {"uni_weights": True}), ("nca_pair", {"uni_weights": True, "use_weighting": True}),
    ("ipo", {"uni_weights": True, "ld_alpha": 0.0, "rpo_alpha": 1.0}),
], ids=lambda v: v if isinstance(v, str) else "-".join(v))
def test_gradcheck_float64_options(name, params):
    base = _small_ratio_pair(6, seed=3)
    fields = {}
    if "ld_alpha" in params:
        fields = {"policy_chosen_shared": _shared((0, "c")), "policy_rejected_shared": _shared((1, "r")),
                  "reference_chosen_shared": _shared((2, "c")), "reference_rejected_shared": _shared((3, "r"))}
    if params.get("use_weighting"):
        # WPO's weights are a stop-gradient: hold them fixed (log-sum-sq tracking the log-probs) so that
        # finite differences see the same surrogate the analytic gradient is of
        fields.update(chosen_log_sum_sq_probs=lambda *xs: xs[0] + 0.2 * base.chosen_lengths,
                      rejected_log_sum_sq_probs=lambda *xs: xs[1] + 0.3 * base.rejected_lengths)
    _gradcheck(name, params, **fields)


def test_gradcheck_float64_mixture():
    base = _small_ratio_pair(5, seed=4)
    loss = build_loss("mpo", {"beta": 0.2, "running_mean": False})

    def fn(pc, pr, rc, rr):
        return loss(PairLogps(pc, pr, base.chosen_lengths, base.rejected_lengths, rc, rr)).loss

    inputs = tuple(x.clone().requires_grad_(True) for x in (
        base.policy_chosen, base.policy_rejected, base.reference_chosen, base.reference_rejected))
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7)


# ---- the options' semantics ----------------------------------------------------------------------------

def test_ld_alpha_one_is_plain_and_zero_keeps_only_the_shared_part():
    pair = _small_ratio_pair(8, seed=5)
    half = {k: getattr(pair, k.replace("_shared", "")) * 0.5 for k in (
        "policy_chosen_shared", "policy_rejected_shared", "reference_chosen_shared", "reference_rejected_shared")}
    with_shared = PairLogps(**{**pair.__dict__, **half})
    plain = preference_loss("sigmoid", pair).per_pair
    torch.testing.assert_close(preference_loss("sigmoid", with_shared, ld_alpha=1.0).per_pair, plain)
    only_shared = PairLogps(**{**pair.__dict__, **{k.replace("_shared", ""): v for k, v in half.items()}})
    torch.testing.assert_close(preference_loss("sigmoid", with_shared, ld_alpha=0.0).per_pair,
                               preference_loss("sigmoid", only_shared).per_pair)


def test_rpo_alpha_adds_trl_sft_term():
    pair = _small_ratio_pair(8, seed=6)
    got = preference_loss("sigmoid", pair, rpo_alpha=0.5).loss
    want = preference_loss("sigmoid", pair).loss + 0.5 * preference_loss("sft", pair).loss
    torch.testing.assert_close(got, want)
    nll = -pair.policy_chosen.sum() / pair.chosen_lengths.sum()  # every chosen token of the batch alike
    torch.testing.assert_close(preference_loss("sft", pair).loss, nll)


def test_uni_weights_on_dpo_reproduce_unidpo_without_nll():
    pair = _small_ratio_pair(8, seed=7)
    uni = preference_loss("unidpo", pair, beta=2.0, nll_weight=0.0)
    dpo = preference_loss("sigmoid_norm", pair, beta=2.0, uni_weights=True, uni_beta=2.0)
    torch.testing.assert_close(dpo.per_pair, uni.per_pair)
    assert "weights/quality" in dpo.details and "weights/perf" in dpo.details


def test_options_that_need_model_fields_say_which():
    pair = _small_ratio_pair(4, seed=8)
    with pytest.raises(ValueError, match=r"ld_alpha needs .*policy_chosen_shared.*models layer must supply"):
        preference_loss("sigmoid", pair, ld_alpha=0.5)
    with pytest.raises(ValueError, match=r"use_weighting needs .*chosen_log_sum_sq_probs"):
        preference_loss("sigmoid", pair, use_weighting=True)


# ---- bco_pair's running δ ------------------------------------------------------------------------------

def test_bco_running_mean_is_the_mean_of_training_batch_means_and_eval_does_not_move_it():
    loss = build_loss("bco_pair", {"beta": 0.5})
    batches = [_small_ratio_pair(6, seed=s) for s in (10, 11, 12)]
    means = []
    for pair in batches[:2]:
        r = 0.5 * torch.cat([pair.policy_chosen - pair.reference_chosen, pair.policy_rejected - pair.reference_rejected])
        means.append(float(r.mean()))
        out = loss(pair)
        assert out.metrics["bco/delta"] == pytest.approx(sum(means) / len(means))
    loss(batches[2], train=False)
    assert loss.state_dict() == {"bco_pair": {"mean": pytest.approx(sum(means) / 2), "count": 2}}
    fresh = build_loss("bco_pair", {"beta": 0.5})
    fresh.load_state_dict(loss.state_dict())
    torch.testing.assert_close(fresh(batches[2], train=False).loss, loss(batches[2], train=False).loss)
    # TRL 1.16's form: δ = 0
    zero = build_loss("bco_pair", {"beta": 0.5, "running_mean": False})
    assert zero(batches[0]).metrics["bco/delta"] == 0.0 and not zero.stateful


def test_bco_running_mean_goes_through_the_process_reduce():
    """Under DDP the trainer sets the reduce to the mean over processes: every rank adds the same value."""
    loss = build_loss("bco_pair", {"beta": 0.5})
    seen = []
    loss.set_reduce(lambda value: seen.append(float(value)) or torch.tensor(3.0))
    out = loss(_small_ratio_pair(6, seed=14))
    assert len(seen) == 1 and loss.state_dict()["bco_pair"] == {"mean": 3.0, "count": 1}
    assert out.metrics["bco/delta"] == 3.0
    loss(_small_ratio_pair(6, seed=15), train=False)
    assert len(seen) == 1  # evaluation neither updates δ nor calls the collective


# ---- parameter rules and refusals ------------------------------------------------------------------------

@pytest.mark.parametrize("name,params,message", [
    ("exo_pair", {"label_smoothing": 0.0}, r"loss.params.label_smoothing must be in \(0, 1\), got 0.0: EXO takes"),
    ("robust", {"label_smoothing": 0.5}, r"loss.params.label_smoothing must be in \[0, 0.5\), got 0.5: robust"),
    ("discopop", {"discopop_tau": 0.0}, r"loss.params.discopop_tau must be > 0"),
    ("sigmoid", {"f_divergence_type": "kl"}, r"loss.params.f_divergence_type must be one of 'reverse_kl'"),
    ("sigmoid", {"ld_alpha": 1.5}, r"loss.params.ld_alpha must be in \[0, 1\]"),
    ("sigmoid", {"rpo_alpha": -1.0}, r"loss.params.rpo_alpha must be >= 0"),
    ("sigmoid", {"use_weighting": 1}, r"loss.params.use_weighting must be true/false"),
    ("bco_pair", {"balance": "policy"}, r"loss.params.balance: 'bco_pair' does not compose with balance: it scores"),
    ("aot", {"use_weighting": True}, r"'aot' does not compose with use_weighting: its per-pair rows are sorted"),
    ("sft", {"uni_weights": True}, r"'sft' does not compose with uni_weights"),
    ("unidpo", {"uni_weights": True}, r"'unidpo' does not compose with uni_weights"),
    ("nca_pair", {"f_divergence_type": "js_divergence"}, r"loss.params \['f_divergence_type'\] are not parameters"),
])
def test_parameter_rules_name_the_key(name, params, message):
    with pytest.raises(ParamError, match=message):
        check_loss(name, params)


@pytest.mark.parametrize("name", [n for n in LOSSES if "beta" in LOSSES[n].parameters()])
@pytest.mark.parametrize("beta", [0.0, -0.1, float("inf"), float("nan")])
def test_beta_must_be_positive_and_finite_for_every_objective(name, beta):
    with pytest.raises(ParamError, match=r"loss.params.beta must be (> 0|finite)"):
        check_loss(name, {"beta": beta})


def test_refused_option_at_its_default_is_accepted():
    check_loss("aot", {"balance": None, "use_weighting": False})


@pytest.mark.parametrize("kwargs,message", [
    (dict(name="dpo", mixture=[{"name": "sft"}]), r"loss.name 'dpo' and loss.mixture are both given"),
    (dict(name="mixture"), r"loss.name: mixture needs loss.mixture"),
    (dict(mixture=[]), r"loss.mixture must be a non-empty list"),
    (dict(mixture=[{"name": "dpo", "wieght": 1}]), r"loss.mixture\[0\]: unknown key\(s\) \['wieght'\]"),
    (dict(mixture=[{"name": "sft"}, {"name": "dpp"}]), r"loss.mixture\[1\].name 'dpp' is not an objective"),
    (dict(mixture=[{"name": "dpo", "weight": -1}]), r"loss.mixture\[0\].weight must be a finite number >= 0"),
    (dict(mixture=[{"name": "dpo", "params": {"beta": 0}}]), r"loss.mixture\[0\].params.beta must be > 0"),
    (dict(mixture=[{"name": "sft"}], params={"beta": 0.1}), r"loss.params \['beta'\] are parameters of no component"),
    (dict(name="mpo", mixture=[{"name": "sft"}]), r"loss.name 'mpo' is a preset mixture"),
    (dict(name="mpo", params={"rpo_alpha": 0.1}), r"loss.params.rpo_alpha cannot be shared"),
])
def test_mixture_errors_name_the_key(kwargs, message):
    with pytest.raises(ParamError, match=message):
        check_loss(**kwargs)


def test_mpo_preset_and_shared_params():
    loss = build_loss("mpo", {"beta": 0.3})
    assert [(c.name, c.weight) for c in loss.components] == [("sigmoid", 0.8), ("bco_pair", 0.2), ("sft", 1.0)]
    assert loss.components[0].values["beta"] == 0.3 and loss.components[1].values["beta"] == 0.3
    assert loss.needs_reference and loss.stateful
    pair = _small_ratio_pair(6, seed=13)
    out = loss(pair)
    # one batch: the running δ is the batch's own mean, as in the stateless form
    want = sum(c.weight * compute(c.name, pair, c.values).loss for c in loss.components)
    torch.testing.assert_close(out.loss, want)
    for key in ("loss/sigmoid", "loss/bco_pair", "loss/sft", "sigmoid/rewards/margins", "bco_pair/bco/delta"):
        assert key in out.metrics
    assert set(PRESETS) == {"mpo"}


def test_repeated_component_gets_its_own_prefix():
    loss = build_loss(mixture=[{"name": "sigmoid", "weight": 0.5}, {"name": "sigmoid", "weight": 0.5,
                                                                      "params": {"beta": 0.5}}])
    assert [c.label for c in loss.components] == ["sigmoid", "sigmoid_2"]


def test_config_mixture_from_yaml(tmp_path):
    from mm_unidpo.train.config import config_from_dict

    raw = {"model": {"name_or_path": "x"}, "data": {"train": "d.jsonl"}, "train": {"output_dir": str(tmp_path)},
           "loss": {"mixture": [{"name": "dpo", "weight": 0.8}, {"name": "bco_pair", "weight": 0.2},
                                {"name": "sft", "weight": 1.0}], "params": {"beta": 0.1}}}
    config = config_from_dict(raw)
    assert config.loss.name == "mixture"
    from mm_unidpo.train.checks import _check_loss

    _check_loss(config)
    assert config_from_dict({**raw, "loss": {}}).loss.name == "unidpo"


def test_cli_lists_every_objective_with_defaults():
    out = subprocess.run([sys.executable, "-m", "mm_unidpo.cli", "losses"], capture_output=True, text=True,
                         check=True).stdout
    for name in [*LOSSES, *PRESETS]:
        assert f"\n{name} " in f"\n{out}", name
    assert "discopop_tau=0.05" in out and "label_smoothing=0.001" in out
