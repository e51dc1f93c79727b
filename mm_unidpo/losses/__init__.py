"""The shared loss core: every training path (text, LLaVA, Qwen-VL) calls `preference_loss` (or a
`Loss` built once from a config's loss section, which is what the trainer holds).

    from mm_unidpo.losses import PairLogps, preference_loss, LOSSES
    out = preference_loss("unidpo", pair, beta=2.0, eta=0.7, gamma=3.0, tau_ref=2.0, tau_good=2.5,
                          nll_weight=0.001)
    out.loss, out.per_pair, out.metrics

Adding an objective = one function (see `objectives.py`, `trl_types.py`) + one line in `LOSSES`
(registry.py), where it also declares its parameter rules and the shared options it refuses. The
shared options (AdaDPO's `balance`, Uni-DPO's `uni_weights`, WPO's `use_weighting`, LD-DPO's
`ld_alpha`, RPO's `rpo_alpha`, mDPO's / CHiP's `image_term`, image.py) are applied around the function
in `core.py`; mixtures and presets (`mpo`) live in `mixture.py`; `check_loss` is what the train config's checks call.
"""

from __future__ import annotations

from typing import Any

from .core import LossOutput, compute
from .mixture import MIXTURE, PRESETS, Loss, build_loss, check_loss, needs_reference
from .pair import PairLogps
from .params import ParamError
from .registry import LOSSES, OPTIONS, Objective, check_params

__all__ = [
    "LOSSES",
    "MIXTURE",
    "OPTIONS",
    "PRESETS",
    "Loss",
    "LossOutput",
    "Objective",
    "PairLogps",
    "ParamError",
    "build_loss",
    "check_loss",
    "check_params",
    "needs_reference",
    "preference_loss",
]


def preference_loss(name: str, pair: PairLogps, **params: Any) -> LossOutput:
    """Compute objective (or preset, e.g. `mpo`) `name` on `pair`. `params` are the objective's keyword
    parameters plus the shared options (`balance`, `balance_clip`, `uni_weights`, `use_weighting`,
    `ld_alpha`, `rpo_alpha`, `image_term` with `image_beta`, `image_weight`, `anchor_weight`,
    `anchor_delta`; registry.py); unknown names and values out of range are errors.
    Stateless: bco_pair's δ is then the batch's own mean reward (a `Loss` keeps the running mean)."""
    if name in PRESETS:
        return build_loss(name, params, where="")(pair)
    if name not in LOSSES:
        raise ValueError(f"unknown objective {name!r}; known: {', '.join(sorted([*LOSSES, *PRESETS]))}")
    allowed = LOSSES[name].parameters()
    unknown = sorted(set(params) - set(allowed) - _refused(name))
    if unknown:
        raise ValueError(f"objective {name!r} has no parameter(s) {unknown}; it takes {sorted(allowed)}")
    return compute(name, pair, check_params(name, params, where=""))


def _refused(name: str) -> set[str]:
    return {key for option in LOSSES[name].refuses for key in OPTIONS[option]}
