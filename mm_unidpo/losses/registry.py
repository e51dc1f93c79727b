"""The objectives by name, each with its parameters' defaults and rules, and `check_params`.

Adding an objective = one function (objectives.py, trl_types.py, ...) + one line in `LOSSES`, with its
own rules (`rules`: ranges that differ from the shared ones in params.py; `check`: a rule across
parameters) and the options it refuses (`refuses`: option → why it does not compose).

The options every objective takes unless it refuses them (`OPTIONS`, applied in core.py):
  balance, balance_clip    AdaDPO's balanced chosen coefficient (balance.py)
  uni_weights, uni_*       Uni-DPO's per-pair weights w_qual · w_perf on another objective (core.py)
  use_weighting            WPO's per-pair weights (core.py; needs *_log_sum_sq_probs in PairLogps)
  ld_alpha                 LD-DPO's down-weighted verbose tail (core.py; needs *_shared in PairLogps)
  rpo_alpha                RPO's NLL on the chosen responses (TRL's `sft` term, added with this weight)
  image_term, image_*, anchor_*  mDPO's / CHiP's image-side terms (image.py; needs *_chosen_contrast);
                           chip only where the function takes `image_margin` (its logit)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import image
from .objectives import Terms, cpo, dpo, hinge, ipo, orpo, rdpo, simpo
from .params import COMMON_RULES, ParamError, Range, Rule, check_value
from .trl_types import (
    aot,
    aot_unpaired,
    apo_down,
    apo_zero,
    bco_pair,
    discopop,
    exo_pair,
    nca_pair,
    robust,
    sft,
    sigmoid,
    sigmoid_norm,
    sppo_hard,
)
from .unidpo import unidpo

OPTIONS: dict[str, dict[str, Any]] = {
    "balance": {"balance": None, "balance_clip": 2.0},
    "uni_weights": {"uni_weights": False, "uni_beta": 2.0, "uni_eta": 0.7, "uni_gamma": 3.0, "uni_tau_ref": 2.0},
    "use_weighting": {"use_weighting": False},
    "ld_alpha": {"ld_alpha": None},
    "rpo_alpha": {"rpo_alpha": None},
    "image_term": image.DEFAULTS,
}
_OPTION_RULES: dict[str, Rule] = image.RULES  # rules an option owns (the others are in params.COMMON_RULES)
_OPTION_OF = {param: option for option, params in OPTIONS.items() for param in params}
_NOT_FUNCTION_PARAMETERS = ("state", "train", "image_margin")  # passed by core.py, not configured


@dataclass(frozen=True)
class Objective:
    fn: Callable[..., Terms]
    needs_reference: bool
    defaults: dict[str, Any] = field(default_factory=dict)  # overrides of fn's own keyword defaults
    rules: dict[str, Rule] = field(default_factory=dict)  # overrides of params.COMMON_RULES
    refuses: dict[str, str] = field(default_factory=dict)  # option (OPTIONS) -> why it does not compose
    check: Callable[[dict[str, Any]], str | None] | None = None  # a rule across parameters: the message
    stateful: bool = False  # fn takes `state` (kept by losses.Loss, saved with checkpoints) and `train`

    def own_parameters(self) -> dict[str, Any]:
        """The objective's own parameters with their defaults (without the shared options)."""
        params = {
            name: p.default
            for name, p in inspect.signature(self.fn).parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in _NOT_FUNCTION_PARAMETERS
        }
        params.update({k: v for k, v in self.defaults.items() if k not in _OPTION_OF})
        return params

    def parameters(self) -> dict[str, Any]:
        """Every parameter this objective takes, with its default."""
        params = self.own_parameters()
        for option, values in OPTIONS.items():
            if option not in self.refuses:
                params.update(values)
        params.update(self.defaults)
        return params

    def rule(self, key: str) -> Rule | None:
        return self.rules.get(key, _OPTION_RULES.get(key, COMMON_RULES.get(key)))

    @property
    def has_logit(self) -> bool:
        """Whether CHiP's visual margin can go inside this objective's logit (fn takes `image_margin`)."""
        return "image_margin" in inspect.signature(self.fn).parameters


_PAIRWISE = "its per-pair rows are sorted over the batch, not pairs"
_SEPARATE = (
    "it scores the chosen and the rejected response in separate terms, so AdaDPO's ratio "
    "c_w/c_l = π_w/π_l (derived for one shared σ' factor) does not balance them"
)
_SFT = {
    "balance": "sft has no rejected response to balance against",
    "uni_weights": "sft has no pair to weight (one batch-level NLL)",
    "ld_alpha": "sft scores every chosen token (TRL applies ld_alpha to the preference terms only)",
    "rpo_alpha": "sft already is the NLL on the chosen responses",
}
_EXO_SMOOTHING = Range(0.0, 1.0, low_open=True, high_open=True, why="EXO takes log ε and log(1 − ε)")
_ROBUST_SMOOTHING = Range(0.0, 0.5, high_open=True, why="robust divides by 1 − 2ε")

LOSSES: dict[str, Objective] = {
    "dpo": Objective(dpo, needs_reference=True),
    "ipo": Objective(ipo, needs_reference=True),
    "hinge": Objective(hinge, needs_reference=True),
    "rdpo": Objective(rdpo, needs_reference=True),
    "simpo": Objective(simpo, needs_reference=False),
    "cpo": Objective(cpo, needs_reference=False),
    "orpo": Objective(orpo, needs_reference=False),
    "unidpo": Objective(
        unidpo, needs_reference=True, refuses={"uni_weights": "unidpo already applies its own w_qual · w_perf"}
    ),
    "adadpo": Objective(dpo, needs_reference=True, defaults={"balance": "policy"}),
    # TRL's DPOTrainer loss types under TRL's names (trl_types.py)
    "sigmoid": Objective(sigmoid, needs_reference=True),
    "sigmoid_norm": Objective(sigmoid_norm, needs_reference=True),
    "robust": Objective(robust, needs_reference=True, rules={"label_smoothing": _ROBUST_SMOOTHING}),
    "exo_pair": Objective(exo_pair, needs_reference=True, rules={"label_smoothing": _EXO_SMOOTHING}),
    "nca_pair": Objective(nca_pair, needs_reference=True, refuses={"balance": _SEPARATE}),
    "bco_pair": Objective(bco_pair, needs_reference=True, refuses={"balance": _SEPARATE}, stateful=True),
    "sppo_hard": Objective(sppo_hard, needs_reference=True, refuses={"balance": _SEPARATE}),
    "aot": Objective(
        aot, needs_reference=True, refuses={"balance": _PAIRWISE, "uni_weights": _PAIRWISE, "use_weighting": _PAIRWISE}
    ),
    "aot_unpaired": Objective(
        aot_unpaired,
        needs_reference=True,
        refuses={"balance": _PAIRWISE, "uni_weights": _PAIRWISE, "use_weighting": _PAIRWISE},
    ),
    "apo_zero": Objective(apo_zero, needs_reference=True, refuses={"balance": _SEPARATE}),
    "apo_down": Objective(apo_down, needs_reference=True, refuses={"balance": _SEPARATE}),
    "discopop": Objective(discopop, needs_reference=True),
    "sft": Objective(sft, needs_reference=False, refuses=_SFT),
}


def check_params(name: str, params: dict[str, Any], where: str = "loss") -> dict[str, Any]:
    """Check objective `name`'s `params` (unknown keys, types, ranges, refused options) and return every
    parameter's value, defaults filled in. A `ParamError` names the key as `{where}.params.KEY` (bare
    `KEY` when `where` is empty); e.g. `loss.params.beta must be > 0, got -1`."""
    name_key = f"{where}.name" if where else "objective"
    prefix = f"{where}.params." if where else ""
    if name not in LOSSES:
        raise ParamError(f"{name_key} {name!r} is not an objective; known: {', '.join(LOSSES)}")
    objective = LOSSES[name]
    allowed = objective.parameters()
    refused = {key: _OPTION_OF[key] for key in params if _OPTION_OF.get(key) in objective.refuses}
    for key, option in refused.items():  # a refused option at its default (off) is fine
        if params[key] != OPTIONS[option][key]:
            raise ParamError(f"{prefix}{key}: {name!r} does not compose with {option}: {objective.refuses[option]}")
    params = {k: v for k, v in params.items() if k not in refused}
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ParamError(
            f"{prefix.rstrip('.') or 'parameters'} {unknown} are not parameters of {name!r}; it takes {sorted(allowed)}"
        )
    values = {**allowed, **params}
    for key, value in values.items():
        check_value(prefix + key, value, allowed[key], objective.rule(key))
    message = objective.check(values) if objective.check is not None else None
    message = message or image.check_image_term(name, values, objective.has_logit)
    if message:
        raise ParamError(f"{prefix}{message}")
    return values


def needs_reference(name: str, params: dict[str, Any] | None = None) -> bool:
    """Whether objective `name` with `params` reads reference log-probs (ratio-space balance does)."""
    objective = LOSSES[name]
    return objective.needs_reference or {**objective.defaults, **(params or {})}.get("balance") == "ratio"
