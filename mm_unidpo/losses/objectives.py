"""The DPO family, one short function each: tensors in, per-pair losses out.

Notation (as in the papers): L = summed response log-prob, ℓ̄ = L / length (mean token log-prob),
w = chosen (preferred), l = rejected, ref = the frozen reference model, σ = the logistic function.

Every function takes the validated `PairLogps` and `chosen_scale`, the AdaDPO coefficient c_w
(1 when balance is off; see `balance.py`), which multiplies the objective's chosen term — the
log-ratio for dpo/ipo/hinge/rdpo, the log-prob for simpo/cpo, the log-odds for orpo. It returns
`Terms`: the per-pair loss and the implicit rewards reported as metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .divergence import f_scores
from .pair import PairLogps


@dataclass
class Terms:
    per_pair: torch.Tensor  # (B,)
    chosen_rewards: torch.Tensor  # (B,), detached
    rejected_rewards: torch.Tensor  # (B,), detached
    details: dict[str, torch.Tensor] = field(default_factory=dict)  # extra per-pair values, detached


def _log_ratios(
    pair: PairLogps, length_normalize: bool, f_divergence_type: str = "reverse_kl", f_alpha_divergence_coef: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Policy-vs-reference scores of the chosen and the rejected response: f'(π/π_ref) of the summed
    log-ratio (divergence.py; the log-ratio itself for the reverse KL), divided by the response length
    if `length_normalize` (then, for the reverse KL, the mean token log-ratio ℓ̄ − ℓ̄^ref)."""
    ref_chosen, ref_rejected = pair.reference
    chosen = f_scores(pair.policy_chosen - ref_chosen, f_divergence_type, f_alpha_divergence_coef)
    rejected = f_scores(pair.policy_rejected - ref_rejected, f_divergence_type, f_alpha_divergence_coef)
    if length_normalize:
        return chosen / pair.chosen_lengths, rejected / pair.rejected_lengths
    return chosen, rejected


def _terms(per_pair: torch.Tensor, beta: float, chosen: torch.Tensor, rejected: torch.Tensor) -> Terms:
    return Terms(per_pair, (beta * chosen).detach(), (beta * rejected).detach())


def dpo(
    pair: PairLogps,
    chosen_scale: torch.Tensor | float = 1.0,
    *,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    length_normalize: bool = False,
    f_divergence_type: str = "reverse_kl",
    f_alpha_divergence_coef: float = 0.5,
    image_margin: torch.Tensor | float = 0.0,
) -> Terms:
    """DPO (Rafailov et al., arXiv 2305.18290) with cDPO label smoothing ε; TRL's `sigmoid`, and with
    `length_normalize` its `sigmoid_norm`.

        Δ = (L_w − L^ref_w) − (L_l − L^ref_l)          (ℓ̄ instead of L if length_normalize)
        loss = −(1 − ε)·log σ(βΔ) − ε·log σ(−βΔ)

    Another `f_divergence_type` replaces each log-ratio by f'(π/π_ref) (divergence.py).
    Composes with AdaDPO's balance (c_w scales the chosen score) and with Uni-DPO's pair weights;
    `image_margin` (CHiP, image.py) is added to Δ (divided by |y_w| if length_normalize).
    """
    chosen, rejected = _log_ratios(pair, length_normalize, f_divergence_type, f_alpha_divergence_coef)
    margin = image_margin / pair.chosen_lengths if length_normalize else image_margin
    logits = beta * (chosen_scale * chosen - rejected + margin)
    per_pair = -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)
    return _terms(per_pair, beta, chosen, rejected)


def ipo(
    pair: PairLogps,
    chosen_scale: torch.Tensor | float = 1.0,
    *,
    beta: float = 0.1,
    f_divergence_type: str = "reverse_kl",
    f_alpha_divergence_coef: float = 0.5,
) -> Terms:
    """IPO (Azar et al., arXiv 2310.12036), on mean token log-probs (as TRL's `ipo`).

        h = (ℓ̄_w − ℓ̄^ref_w) − (ℓ̄_l − ℓ̄^ref_l);   loss = (h − 1/(2β))²

    Composes with balance and Uni-DPO's pair weights; accepts another `f_divergence_type`.
    """
    chosen, rejected = _log_ratios(pair, True, f_divergence_type, f_alpha_divergence_coef)
    per_pair = (chosen_scale * chosen - rejected - 1 / (2 * beta)) ** 2
    return _terms(per_pair, beta, chosen, rejected)


def hinge(
    pair: PairLogps,
    chosen_scale: torch.Tensor | float = 1.0,
    *,
    beta: float = 0.1,
    length_normalize: bool = False,
    f_divergence_type: str = "reverse_kl",
    f_alpha_divergence_coef: float = 0.5,
) -> Terms:
    """Hinge / SLiC as used by RSO (Liu et al., arXiv 2309.06657):  loss = relu(1 − βΔ) (TRL's `hinge`).

    Composes with balance and Uni-DPO's pair weights; accepts another `f_divergence_type`.
    """
    chosen, rejected = _log_ratios(pair, length_normalize, f_divergence_type, f_alpha_divergence_coef)
    per_pair = torch.relu(1 - beta * (chosen_scale * chosen - rejected))
    return _terms(per_pair, beta, chosen, rejected)


def rdpo(
    pair: PairLogps,
    chosen_scale: torch.Tensor | float = 1.0,
    *,
    beta: float = 0.1,
    alpha: float = 0.01,
    length_normalize: bool = False,
    image_margin: torch.Tensor | float = 0.0,
) -> Terms:
    """R-DPO (Park et al., arXiv 2403.19159), DPO with a length penalty α:

    loss = −log σ(βΔ − α(|y_w| − |y_l|))          (CHiP's `image_margin` added to Δ, as in dpo)
    """
    chosen, rejected = _log_ratios(pair, length_normalize)
    length_gap = pair.chosen_lengths - pair.rejected_lengths
    margin = image_margin / pair.chosen_lengths if length_normalize else image_margin
    per_pair = -F.logsigmoid(beta * (chosen_scale * chosen - rejected + margin) - alpha * length_gap)
    return _terms(per_pair, beta, chosen, rejected)


def simpo(
    pair: PairLogps, chosen_scale: torch.Tensor | float = 1.0, *, beta: float = 2.0, margin: float = 1.0
) -> Terms:
    """SimPO (Meng et al., arXiv 2405.14734), reference-free; `margin` is the target reward margin γ:

    loss = −log σ(β(ℓ̄_w − ℓ̄_l) − γ)            (defaults β=2, γ=1: the paper's γ/β = 0.5)
    """
    chosen, rejected = pair.policy_chosen_mean, pair.policy_rejected_mean
    per_pair = -F.logsigmoid(beta * (chosen_scale * chosen - rejected) - margin)
    return _terms(per_pair, beta, chosen, rejected)


def cpo(
    pair: PairLogps, chosen_scale: torch.Tensor | float = 1.0, *, beta: float = 0.1, nll_weight: float = 1.0
) -> Terms:
    """CPO (Xu et al., arXiv 2401.08417), reference-free, with an NLL term on the chosen response:

    loss = −log σ(β(L_w − L_l)) − nll_weight · ℓ̄_w
    """
    chosen, rejected = pair.policy_chosen, pair.policy_rejected
    nll = -pair.policy_chosen_mean
    per_pair = -F.logsigmoid(beta * (chosen_scale * chosen - rejected)) + nll_weight * nll
    terms = _terms(per_pair, beta, chosen, rejected)
    terms.details["loss/nll"] = (nll_weight * nll).detach()
    return terms


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 − exp(x)) for x < 0, accurate at both ends (Mächler 2012)."""
    return torch.where(x > -0.6931471805599453, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


# A mean log-prob of exactly 0 has infinite odds; cap it just below (odds ≈ 13.8), far above anything
# a real response reaches, so the loss stays finite.
_MAX_MEAN_LOGP = -1e-6


def orpo(pair: PairLogps, chosen_scale: torch.Tensor | float = 1.0, *, beta: float = 0.1) -> Terms:
    """ORPO (Hong et al., arXiv 2403.07691), reference-free; β is the paper's λ:

    odds(y) = ℓ̄ − log(1 − exp(ℓ̄));   loss = −ℓ̄_w − β · log σ(odds_w − odds_l)
    """
    chosen = pair.policy_chosen_mean.clamp(max=_MAX_MEAN_LOGP)
    rejected = pair.policy_rejected_mean.clamp(max=_MAX_MEAN_LOGP)
    odds_chosen, odds_rejected = chosen - log1mexp(chosen), rejected - log1mexp(rejected)
    odds_term = F.logsigmoid(chosen_scale * odds_chosen - odds_rejected)
    per_pair = -chosen - beta * odds_term
    terms = _terms(per_pair, beta, pair.policy_chosen_mean, pair.policy_rejected_mean)
    terms.details["loss/nll"] = (-chosen).detach()
    terms.details["orpo/log_odds_ratio"] = (odds_chosen - odds_rejected).detach()
    return terms
