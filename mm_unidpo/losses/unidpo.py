"""Uni-DPO (Peng et al., "Uni-DPO: A Unified Paradigm for Dynamic Preference Optimization of LLMs",
arXiv 2506.10054, ICLR 2026; official code pspdada/Uni-DPO).

DPO treats every pair alike. Uni-DPO weights each pair by its data quality (the score gap) and by the
model's learning state (pairs the policy already separates well count less), and adds a calibrated NLL
term that lifts the preferred response only where it is good and has fallen below the reference:

    m      = ℓ̄_w − ℓ̄_l                      (policy only)
    m_ref  = ℓ̄^ref_w − ℓ̄^ref_l
    w_qual = σ(η (S_w − S_l))                 (scores are data: no gradient)
    w_perf = (1 − σ(β m − τ_ref))^γ           (NOT detached in the official code; see below)
    loss   = −w_qual · w_perf · log σ(β (m − m_ref))  −  λ · 1[ℓ̄^ref_w > ℓ̄_w] · 1[S_w ≥ τ_good] · ℓ̄_w

averaged over the batch, with no clipping or normalisation of the weights — the official semantics.
`detach_perf_weight=True` stops the gradient through w_perf (reading it strictly as a weight).
Without scores, w_qual = 1 and the τ_good gate is open (logged once).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from .objectives import Terms
from .pair import PairLogps

logger = logging.getLogger(__name__)
_warned_no_scores = False


def _warn_no_scores_once() -> None:
    global _warned_no_scores
    if not _warned_no_scores:
        _warned_no_scores = True
        logger.warning("unidpo: no quality scores given; using w_qual = 1 and an open tau_good gate")


def unidpo(
    pair: PairLogps,
    chosen_scale: torch.Tensor | float = 1.0,
    *,
    beta: float = 2.0,
    eta: float = 0.7,
    gamma: float = 3.0,
    tau_ref: float = 2.0,
    tau_good: float = 2.5,
    nll_weight: float = 0.001,
    detach_perf_weight: bool = False,
    image_margin: torch.Tensor | float = 0.0,
) -> Terms:
    """Uni-DPO per-pair loss. Defaults: the official multimodal settings (Qwen2-VL-2B). CHiP's
    `image_margin` (image.py) is added, divided by |y_w| (Uni-DPO's logit is on ℓ̄), inside β(m − m_ref)."""
    policy_w, policy_l = pair.policy_chosen_mean, pair.policy_rejected_mean
    ref_w, ref_l = pair.reference_chosen_mean, pair.reference_rejected_mean

    if pair.has_scores:
        score_w, score_l = pair.scores
        w_qual = torch.sigmoid(eta * (score_w - score_l)).detach()
        good = (score_w >= tau_good).to(policy_w.dtype)
    else:
        _warn_no_scores_once()
        w_qual = torch.ones_like(policy_w)
        good = torch.ones_like(policy_w)

    # (1 − σ(x))^γ computed as exp(γ · log σ(−x)): identical in value, finite gradient at γ = 0
    # and no cancellation when σ(x) → 1.
    w_perf = torch.exp(gamma * F.logsigmoid(-(beta * (policy_w - policy_l) - tau_ref)))
    if detach_perf_weight:
        w_perf = w_perf.detach()

    # The AdaDPO coefficient, when on, scales the chosen log-ratio; with c_w = 1 this is β(m − m_ref).
    logits = beta * (chosen_scale * (policy_w - ref_w) - (policy_l - ref_l) + image_margin / pair.chosen_lengths)
    preference = -w_qual * w_perf * F.logsigmoid(logits)

    below_reference = (ref_w > policy_w).to(policy_w.dtype).detach()
    gate = below_reference * good
    nll = -nll_weight * gate * policy_w

    terms = Terms(preference + nll, (beta * (policy_w - ref_w)).detach(), (beta * (policy_l - ref_l)).detach())
    terms.details.update(
        {
            "weights/quality": w_qual.detach(),
            "weights/perf": w_perf.detach(),
            "nll/active_fraction": gate,
            "loss/nll": nll.detach(),
            "loss/preference": preference.detach(),
        }
    )
    return terms
