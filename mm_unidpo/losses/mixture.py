"""A configured loss: one objective or a weighted sum of objectives (TRL's `loss_type` list with
`loss_weights`), checked once, holding the running state some objectives keep (bco_pair's δ).

    loss = build_loss(mixture=[{"name": "sigmoid", "weight": 0.8}, {"name": "bco_pair", "weight": 0.2},
                               {"name": "sft", "weight": 1.0}], params={"beta": 0.1})
    out = loss(pair)            # out.loss = Σ weight_k · loss_k; metrics of component k under "name_k/"
    loss.state_dict()           # saved with the trainer state, loaded on resume

`params` next to a mixture are shared: each goes to every component that takes it (as TRL's `beta`
applies to every loss type); a component's own `params` win. `PRESETS` name common mixtures:
`mpo` is InternVL's Mixed Preference Optimization (Wang et al., arXiv 2411.10442): sigmoid 0.8,
bco_pair 0.2, sft 1.0.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .core import LossOutput, compute
from .params import ParamError
from .registry import LOSSES, check_params
from .trl_types import RunningMean

MIXTURE = "mixture"
PRESETS: dict[str, tuple[dict[str, Any], ...]] = {
    "mpo": ({"name": "sigmoid", "weight": 0.8}, {"name": "bco_pair", "weight": 0.2}, {"name": "sft", "weight": 1.0}),
}
_COMPONENT_KEYS = ("name", "weight", "params")


@dataclass
class Component:
    name: str
    weight: float
    values: dict[str, Any]  # every parameter, checked
    label: str  # the metric prefix: the name, made unique (dpo, dpo_2) when a mixture repeats one
    state: RunningMean | None = None


class Loss:
    """A checked objective or mixture; call it on a `PairLogps`."""

    def __init__(self, components: list[Component], mixture: bool):
        self.components, self.mixture = components, mixture

    @property
    def needs_reference(self) -> bool:
        return any(LOSSES[c.name].needs_reference or c.values.get("balance") == "ratio" for c in self.components)

    @property
    def needs_log_sum_sq(self) -> bool:
        """WPO weighting (`use_weighting`) reads the policy's Σ log Σ_v p(v)² per response."""
        return any(bool(c.values.get("use_weighting")) for c in self.components)

    @property
    def needs_contrast(self) -> bool:
        """An image term (image.py) reads the chosen response's log-probs under the contrast image."""
        return any(c.values.get("image_term") is not None for c in self.components)

    @property
    def stateful(self) -> bool:
        return any(c.state is not None for c in self.components)

    def __call__(self, pair, train: bool = True) -> LossOutput:
        if not self.mixture:
            (only,) = self.components
            return compute(only.name, pair, only.values, only.state, train)
        total: torch.Tensor | float = 0.0
        per_pair: torch.Tensor | float = 0.0
        metrics: dict[str, float] = {}
        details: dict[str, torch.Tensor] = {}
        for c in self.components:
            out = compute(c.name, pair, c.values, c.state, train)
            total = total + c.weight * out.loss
            per_pair = per_pair + c.weight * out.per_pair
            metrics[f"loss/{c.label}"] = float(out.loss.detach())
            metrics.update({f"{c.label}/{k}": v for k, v in out.metrics.items()})
            details.update({f"{c.label}/{k}": v for k, v in out.details.items()})
            for key in (
                "rewards/chosen",
                "rewards/rejected",
                "rewards/margins",
                "rewards/accuracies",
                "logps/chosen",
                "logps/rejected",
            ):
                metrics.setdefault(key, out.metrics[key])  # the first component's, under TRL's names
        assert isinstance(total, torch.Tensor) and isinstance(per_pair, torch.Tensor)
        return LossOutput(loss=total, per_pair=per_pair, metrics=metrics, details=details)

    def set_reduce(self, reduce: Callable[[torch.Tensor], torch.Tensor] | None) -> None:
        """How running state combines a batch statistic across processes (the trainer: their mean)."""
        for c in self.components:
            if c.state is not None:
                c.state.reduce = reduce

    def state_dict(self) -> dict[str, Any]:
        return {c.label: c.state.state_dict() for c in self.components if c.state is not None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for c in self.components:
            if c.state is not None and c.label in state:
                c.state.load_state_dict(state[c.label])


def build_loss(
    name: str | None = None,
    params: dict[str, Any] | None = None,
    mixture: list[dict[str, Any]] | None = None,
    where: str = "loss",
) -> Loss:
    """Check and build a loss from a config's `loss` section: an objective or preset `name` with
    `params`, or a `mixture` (with `name` None or "mixture", `params` shared). Errors name the key."""
    params = dict(params or {})
    if name in PRESETS:
        if mixture is not None:
            raise ParamError(f"{where}.name {name!r} is a preset mixture: give no {where}.mixture with it")
        mixture = [dict(c) for c in PRESETS[name]]
    elif mixture is not None and name not in (None, MIXTURE):
        raise ParamError(
            f"{where}.name {name!r} and {where}.mixture are both given: for a mixture write "
            f"{where}.name: {MIXTURE} (or leave the name out)"
        )
    elif mixture is None:
        if name == MIXTURE:
            raise ParamError(f"{where}.name: {MIXTURE} needs {where}.mixture, a list of {{name, weight, params}}")
        if name not in LOSSES:
            raise ParamError(
                f"{where}.name {name!r} is not an objective; known: {', '.join([*LOSSES, *PRESETS, MIXTURE])}"
            )
        values = check_params(name, params, where)
        return Loss([Component(name, 1.0, values, name, _state(name, values))], mixture=False)
    return Loss(_components(mixture, params, where), mixture=True)


def _components(mixture: Any, shared: dict[str, Any], where: str) -> list[Component]:
    if not isinstance(mixture, list) or not mixture:
        raise ParamError(f"{where}.mixture must be a non-empty list of {{name, weight, params}}, got {mixture!r}")
    if "rpo_alpha" in shared:  # shared, it would add the NLL once per component
        raise ParamError(
            f"{where}.params.rpo_alpha cannot be shared by a mixture's components: give it to one "
            f"component, or add a component {{name: sft, weight: α}}"
        )
    if shared.get("image_term") == "mdpo":  # shared, it would add mDPO's terms once per component
        raise ParamError(
            f"{where}.params.image_term: mdpo cannot be shared by a mixture's components (its terms would be "
            f"added once per component): give it to one component's params"
        )
    used: set[str] = set()
    components: list[Component] = []
    labels: list[str] = []
    for i, spec in enumerate(mixture):
        at = f"{where}.mixture[{i}]"
        if not isinstance(spec, dict):
            raise ParamError(f"{at} must be a mapping {{name, weight, params}}, got {spec!r}")
        bad = sorted(set(spec) - set(_COMPONENT_KEYS))
        if bad:
            raise ParamError(f"{at}: unknown key(s) {bad}; a component takes {list(_COMPONENT_KEYS)}")
        name, weight, own = spec.get("name"), spec.get("weight", 1.0), spec.get("params") or {}
        if name not in LOSSES:
            raise ParamError(f"{at}.name {name!r} is not an objective; known: {', '.join(LOSSES)}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            raise ParamError(f"{at}.weight must be a finite number >= 0, got {weight!r}")
        if not isinstance(own, dict):
            raise ParamError(f"{at}.params must be a mapping, got {own!r}")
        accepted = LOSSES[name].parameters()
        used.update(k for k in shared if k in accepted)
        values = check_params(name, {**{k: v for k, v in shared.items() if k in accepted}, **own}, at)
        label = name if name not in labels else f"{name}_{labels.count(name) + 1}"
        labels.append(name)
        components.append(Component(name, float(weight), values, label, _state(name, values)))
    unused = sorted(set(shared) - used)
    if unused:
        raise ParamError(
            f"{where}.params {unused} are parameters of no component of the mixture "
            f"({', '.join(c.name for c in components)})"
        )
    return components


def _state(name: str, values: dict[str, Any]) -> RunningMean | None:
    return RunningMean() if LOSSES[name].stateful and values.get("running_mean", True) else None


def check_loss(
    name: str | None = None,
    params: dict[str, Any] | None = None,
    mixture: list[dict[str, Any]] | None = None,
    where: str = "loss",
) -> None:
    """Raise `ParamError` (a ValueError naming the key) if the loss section cannot run."""
    build_loss(name, params, mixture, where)


def needs_reference(
    name: str | None, params: dict[str, Any] | None = None, mixture: list[dict[str, Any]] | None = None
) -> bool:
    """Whether the loss reads reference log-probs (any component that does, or ratio-space balance)."""
    return build_loss(name, params, mixture).needs_reference
