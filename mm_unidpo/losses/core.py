"""`compute`: one objective on one batch, with the shared options applied around its function.

    pair ──ld_alpha──▶ scored pair ──balance──▶ fn(pair, c_w, [image_margin], **params) ──uni_weights──▶
         + rpo_alpha·NLL + mDPO's image terms ──use_weighting──▶ per_pair ──mean──▶ loss

ld_alpha (LD-DPO, Liu et al., arXiv 2409.06411): each response's log-prob sum becomes
    L' = L_shared + α·(L − L_shared), L_shared = the sum over its first min(|y_w|, |y_l|) tokens,
for the policy and the reference alike; it needs `PairLogps.*_shared` (per-token log-probs split at the
shorter length — summed log-probs cannot give it; the models layer must supply these fields).
uni_weights (Uni-DPO, arXiv 2506.10054): per_pair · w_qual · w_perf on another objective, with
    w_qual = σ(η(S_w − S_l)) (1 without scores), w_perf = (1 − σ(β_u(ℓ̄_w − ℓ̄_l) − τ_ref))^γ.
rpo_alpha (RPO, Pang et al., arXiv 2404.19733): + α · TRL's `sft` term, the NLL averaged over every
    chosen token of the batch (TRL's normalisation; the paper divides each response by its own length).
use_weighting (WPO, Zhou et al., arXiv 2406.11827, eq. 2): per_pair · w_w · w_l, detached, with
    w = exp(mean over the response's tokens of log π(y_t) − log Σ_v π(v)²), from the unweighted log-probs;
    needs `PairLogps.*_log_sum_sq_probs` (the models layer must supply them).
image_term (mDPO arXiv 2406.11839 / CHiP arXiv 2501.16629; image.py): "mdpo" adds
    image_weight·conditional + anchor_weight·anchored to per_pair; "chip" passes the visual margin
    image_weight·(r_w − r̃_w) into the objective's logit. Both need `PairLogps.*_chosen_contrast`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, overload

import torch
import torch.nn.functional as F

from .balance import balance_coefficient
from .image import chip_margin, mdpo_terms
from .objectives import Terms
from .pair import PairLogps, validate_and_cast
from .registry import LOSSES, OPTIONS
from .trl_types import sft

_OPTION_KEYS = {key for params in OPTIONS.values() for key in params}


@dataclass
class LossOutput:
    loss: torch.Tensor  # scalar: mean of per_pair
    per_pair: torch.Tensor  # (B,)
    metrics: dict[str, float]  # detached batch summaries (TRL's names where they exist)
    details: dict[str, torch.Tensor]  # detached per-pair values (rewards, weights) for histograms


def compute(name: str, pair: PairLogps, values: dict[str, Any], state: Any = None, train: bool = True) -> LossOutput:
    """Objective `name` on `pair` with `values` as `registry.check_params` returned them (not checked again).
    `state`: the objective's running state (bco_pair's δ), updated only when `train`."""
    objective = LOSSES[name]
    params = {k: v for k, v in values.items() if k not in _OPTION_KEYS}
    options = {k: v for k, v in values.items() if k in _OPTION_KEYS}
    balance, ld_alpha, image_term = options.get("balance"), options.get("ld_alpha"), options.get("image_term")
    raw = validate_and_cast(
        pair,
        needs_reference=objective.needs_reference,
        objective=name,
        ld_alpha=ld_alpha is not None,
        weighting=bool(options.get("use_weighting")),
        contrast=image_term is not None,
    )
    scored = raw if ld_alpha is None else length_desensitised(raw, ld_alpha)
    chosen_scale: torch.Tensor | float = 1.0
    if balance is not None:
        chosen_scale = balance_coefficient(scored, balance, float(options.get("balance_clip", 2.0)))
    if objective.stateful:
        params.update(state=state, train=train)
    if image_term == "chip":
        params["image_margin"] = chip_margin(raw, options["image_weight"])

    terms = objective.fn(scored, chosen_scale, **params)
    per_pair = terms.per_pair
    if options.get("uni_weights"):
        w_qual, w_perf = uni_pair_weights(
            scored, options["uni_beta"], options["uni_eta"], options["uni_gamma"], options["uni_tau_ref"]
        )
        per_pair = per_pair * w_qual * w_perf
        terms.details.update({"weights/quality": w_qual.detach(), "weights/perf": w_perf.detach()})
    if options.get("rpo_alpha"):
        nll = sft(raw).per_pair
        per_pair = per_pair + options["rpo_alpha"] * nll
        terms.details["loss/rpo_nll"] = nll.detach()
    if image_term is not None:
        per_pair = per_pair + _image_terms(raw, image_term, options, terms, float(values.get("beta", 1.0)))
    if options.get("use_weighting"):
        weight = wpo_weights(raw)
        per_pair = per_pair * weight
        terms.details["wpo/weight"] = weight
    terms.per_pair = per_pair
    return LossOutput(
        loss=per_pair.mean(),
        per_pair=per_pair,
        metrics=_metrics(scored, terms, chosen_scale, float(options.get("balance_clip", 2.0))),
        details={
            "rewards/chosen": terms.chosen_rewards,
            "rewards/rejected": terms.rejected_rewards,
            **({"balance/coef": chosen_scale} if isinstance(chosen_scale, torch.Tensor) else {}),
            **terms.details,
        },
    )


def _image_terms(pair: PairLogps, image_term: str, options: dict[str, Any], terms: Terms, beta: float) -> torch.Tensor:
    """mDPO's weighted terms to add to per_pair (0 for chip, which is inside the logit); logs the
    contrast margin β·(r_w − r̃_w) (β_img for mdpo, the objective's β for chip) and L̃_w."""
    scale = options["image_beta"] if image_term == "mdpo" else beta
    terms.details["rewards/contrast_margin"] = (scale * chip_margin(pair, 1.0)).detach()
    terms.details["logps/chosen_contrast"] = pair.chosen_contrast.detach()
    if image_term != "mdpo":
        return torch.zeros_like(pair.policy_chosen)
    conditional, anchored = mdpo_terms(pair, options["image_beta"], options["anchor_delta"])
    terms.details.update({"loss/image_conditional": conditional.detach(), "loss/image_anchored": anchored.detach()})
    return options["image_weight"] * conditional + options["anchor_weight"] * anchored


def length_desensitised(pair: PairLogps, ld_alpha: float) -> PairLogps:
    """LD-DPO's sums: L' = L_shared + α·(L − L_shared) for every log-prob the pair carries."""

    @overload
    def mix(total: torch.Tensor, shared: torch.Tensor | None) -> torch.Tensor: ...
    @overload
    def mix(total: None, shared: torch.Tensor | None) -> None: ...
    @overload
    def mix(total: torch.Tensor | None, shared: torch.Tensor | None) -> torch.Tensor | None: ...

    def mix(total: torch.Tensor | None, shared: torch.Tensor | None) -> torch.Tensor | None:
        if total is None or shared is None:
            return total
        return shared + ld_alpha * (total - shared)

    return dataclasses.replace(
        pair,
        policy_chosen=mix(pair.policy_chosen, pair.policy_chosen_shared),
        policy_rejected=mix(pair.policy_rejected, pair.policy_rejected_shared),
        reference_chosen=mix(pair.reference_chosen, pair.reference_chosen_shared),
        reference_rejected=mix(pair.reference_rejected, pair.reference_rejected_shared),
    )


def uni_pair_weights(
    pair: PairLogps, beta: float, eta: float, gamma: float, tau_ref: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Uni-DPO's w_qual (detached; 1 without scores) and w_perf (not detached, as in unidpo)."""
    margin = pair.policy_chosen_mean - pair.policy_rejected_mean
    if pair.has_scores:
        score_w, score_l = pair.scores
        w_qual = torch.sigmoid(eta * (score_w - score_l)).detach()
    else:
        w_qual = torch.ones_like(margin)
    w_perf = torch.exp(gamma * F.logsigmoid(-(beta * margin - tau_ref)))
    return w_qual, w_perf


def wpo_weights(pair: PairLogps) -> torch.Tensor:
    """WPO's detached per-pair weight w_w · w_l (see the module docstring)."""
    with torch.no_grad():
        sq_chosen, sq_rejected = pair.log_sum_sq_probs
        chosen = (pair.policy_chosen - sq_chosen) / pair.chosen_lengths
        rejected = (pair.policy_rejected - sq_rejected) / pair.rejected_lengths
        return torch.exp(chosen + rejected)


def _metrics(
    pair: PairLogps, terms: Terms, chosen_scale: torch.Tensor | float, balance_clip: float
) -> dict[str, float]:
    margins = terms.chosen_rewards - terms.rejected_rewards
    metrics = {
        "rewards/chosen": terms.chosen_rewards.mean(),
        "rewards/rejected": terms.rejected_rewards.mean(),
        "rewards/margins": margins.mean(),
        "rewards/accuracies": (margins > 0).float().mean(),
        "logps/chosen": pair.policy_chosen.detach().mean(),
        "logps/rejected": pair.policy_rejected.detach().mean(),
    }
    metrics.update({key: value.float().mean() for key, value in terms.details.items()})
    if isinstance(chosen_scale, torch.Tensor):
        metrics["balance/coef_mean"] = chosen_scale.mean()
        metrics["balance/clipped_fraction"] = (chosen_scale >= balance_clip * (1 - 1e-6)).float().mean()
    # One device-to-host copy for all of them.
    keys = list(metrics)
    values = torch.stack([metrics[k].detach().to(torch.float64) for k in keys]).tolist()
    return dict(zip(keys, values))
