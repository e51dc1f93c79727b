"""The shared loss core: every training path (text, LLaVA, Qwen-VL) calls `preference_loss`.

    from mm_unidpo.losses import PairLogps, preference_loss, LOSSES
    out = preference_loss("unidpo", pair, beta=2.0, eta=0.7, gamma=3.0, tau_ref=2.0, tau_good=2.5,
                          nll_weight=0.001)
    out.loss, out.per_pair, out.metrics

Adding an objective = one function (see `objectives.py`) + one line in `LOSSES`. Every pairwise
objective accepts AdaDPO's `balance="policy"|"ratio"` and `balance_clip` (see `balance.py`).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .balance import balance_coefficient
from .objectives import Terms, cpo, dpo, hinge, ipo, orpo, rdpo, simpo
from .pair import PairLogps, validate_and_cast
from .unidpo import unidpo

__all__ = ["LOSSES", "LossOutput", "Objective", "PairLogps", "needs_reference", "preference_loss"]


@dataclass(frozen=True)
class Objective:
    fn: Callable[..., Terms]
    needs_reference: bool
    defaults: dict[str, Any] = field(default_factory=dict)  # overrides of fn's own keyword defaults

    def parameters(self) -> dict[str, Any]:
        """Every parameter this objective takes, with its default."""
        params = {name: p.default for name, p in inspect.signature(self.fn).parameters.items()
                  if p.kind is inspect.Parameter.KEYWORD_ONLY}
        params.update({"balance": None, "balance_clip": 2.0})
        params.update(self.defaults)
        return params


LOSSES: dict[str, Objective] = {
    "dpo": Objective(dpo, needs_reference=True),
    "ipo": Objective(ipo, needs_reference=True),
    "hinge": Objective(hinge, needs_reference=True),
    "rdpo": Objective(rdpo, needs_reference=True),
    "simpo": Objective(simpo, needs_reference=False),
    "cpo": Objective(cpo, needs_reference=False),
    "orpo": Objective(orpo, needs_reference=False),
    "unidpo": Objective(unidpo, needs_reference=True),
    "adadpo": Objective(dpo, needs_reference=True, defaults={"balance": "policy"}),
}


def needs_reference(name: str, params: dict[str, Any] | None = None) -> bool:
    """Whether objective `name` with `params` reads reference log-probs (ratio-space balance does)."""
    objective = LOSSES[name]
    return objective.needs_reference or {**objective.defaults, **(params or {})}.get("balance") == "ratio"


@dataclass
class LossOutput:
    loss: torch.Tensor  # scalar: mean of per_pair
    per_pair: torch.Tensor  # (B,)
    metrics: dict[str, float]  # detached batch summaries (TRL's names where they exist)
    details: dict[str, torch.Tensor]  # detached per-pair values (rewards, weights) for histograms


def preference_loss(name: str, pair: PairLogps, **params: Any) -> LossOutput:
    """Compute objective `name` on `pair`. `params` are the objective's keyword parameters plus
    `balance` (None | "policy" | "ratio") and `balance_clip`; unknown names are an error."""
    if name not in LOSSES:
        raise ValueError(f"unknown objective {name!r}; known: {', '.join(sorted(LOSSES))}")
    objective = LOSSES[name]
    allowed = objective.parameters()
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"objective {name!r} has no parameter(s) {unknown}; it takes {sorted(allowed)}")
    values = {**objective.defaults, **params}
    balance = values.pop("balance", None)
    balance_clip = float(values.pop("balance_clip", 2.0))

    pair = validate_and_cast(pair, needs_reference=objective.needs_reference, objective=name)
    chosen_scale: torch.Tensor | float = 1.0
    if balance is not None:
        chosen_scale = balance_coefficient(pair, balance, balance_clip)

    terms = objective.fn(pair, chosen_scale, **values)
    return LossOutput(
        loss=terms.per_pair.mean(),
        per_pair=terms.per_pair,
        metrics=_metrics(pair, terms, chosen_scale, balance_clip),
        details={"rewards/chosen": terms.chosen_rewards, "rewards/rejected": terms.rejected_rewards,
                 **({"balance/coef": chosen_scale} if isinstance(chosen_scale, torch.Tensor) else {}),
                 **terms.details},
    )


def _metrics(pair: PairLogps, terms: Terms, chosen_scale: torch.Tensor | float,
             balance_clip: float) -> dict[str, float]:
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
