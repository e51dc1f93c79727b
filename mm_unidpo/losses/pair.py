"""What every objective reads: a batch of per-pair sequence log-probs, checked and cast once.

`PairLogps` holds SUMS of token log-probs (L) and token counts; objectives that want the mean token
log-prob ℓ̄ = L / length use the `*_mean` properties. Validation happens here so that every objective
gets the same clear errors (which field, which rows) instead of a NaN three steps later.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

_FIELDS = (
    "policy_chosen",
    "policy_rejected",
    "chosen_lengths",
    "rejected_lengths",
    "reference_chosen",
    "reference_rejected",
    "score_chosen",
    "score_rejected",
    "policy_chosen_shared",
    "policy_rejected_shared",
    "reference_chosen_shared",
    "reference_rejected_shared",
    "chosen_log_sum_sq_probs",
    "rejected_log_sum_sq_probs",
    "policy_chosen_contrast",
    "reference_chosen_contrast",
)
_SHARED = ("policy_chosen_shared", "policy_rejected_shared", "reference_chosen_shared", "reference_rejected_shared")
_LOG_SUM_SQ = ("chosen_log_sum_sq_probs", "rejected_log_sum_sq_probs")
_CONTRAST = ("policy_chosen_contrast", "reference_chosen_contrast")


@dataclass(frozen=True)
class PairLogps:
    """Per-pair inputs of a preference objective; every tensor has shape (B,).

    policy_*     SUM of the policy's log-probs over the response tokens.
    *_lengths    number of response tokens (>= 1), counted exactly as the sums were.
    reference_*  the same sums under the reference model, or None for reference-free objectives.
    score_*      quality scores S_w, S_l of the two responses (Uni-DPO), or None.

    Optional, read only by the options that need them (losses/core.py); the models layer must supply
    them — summed log-probs cannot give them:
    *_shared     (ld_alpha, LD-DPO) the sum of the same log-probs over the response's first
                 min(|y_w|, |y_l|) tokens only (the chosen and the rejected of a pair share that count).
    *_log_sum_sq_probs  (use_weighting, WPO) Σ_t log Σ_v π(v | y_<t)² over the response's tokens, from the
                 policy (TRL's `log_sum_sq_probs`, summed like the log-probs).
    *_chosen_contrast  (image_term, losses/image.py) the SUM of the chosen response's log-probs under the
                 contrast image (a corrupted view or another image) instead of the prompt's, from the
                 policy and the reference.
    """

    policy_chosen: torch.Tensor
    policy_rejected: torch.Tensor
    chosen_lengths: torch.Tensor
    rejected_lengths: torch.Tensor
    reference_chosen: torch.Tensor | None = None
    reference_rejected: torch.Tensor | None = None
    score_chosen: torch.Tensor | None = None
    score_rejected: torch.Tensor | None = None
    policy_chosen_shared: torch.Tensor | None = None
    policy_rejected_shared: torch.Tensor | None = None
    reference_chosen_shared: torch.Tensor | None = None
    reference_rejected_shared: torch.Tensor | None = None
    chosen_log_sum_sq_probs: torch.Tensor | None = None
    rejected_log_sum_sq_probs: torch.Tensor | None = None
    policy_chosen_contrast: torch.Tensor | None = None
    reference_chosen_contrast: torch.Tensor | None = None

    # Mean token log-probs ℓ̄ = L / length.
    @property
    def policy_chosen_mean(self) -> torch.Tensor:
        return self.policy_chosen / self.chosen_lengths

    @property
    def policy_rejected_mean(self) -> torch.Tensor:
        return self.policy_rejected / self.rejected_lengths

    @property
    def reference_chosen_mean(self) -> torch.Tensor:
        return _require(self.reference_chosen, "reference_chosen") / self.chosen_lengths

    @property
    def reference_rejected_mean(self) -> torch.Tensor:
        return _require(self.reference_rejected, "reference_rejected") / self.rejected_lengths

    @property
    def has_reference(self) -> bool:
        return self.reference_chosen is not None and self.reference_rejected is not None

    @property
    def has_scores(self) -> bool:
        return self.score_chosen is not None and self.score_rejected is not None

    # The optional inputs, for an objective that needs them (an error naming the field where absent).
    @property
    def reference(self) -> tuple[torch.Tensor, torch.Tensor]:
        return _require(self.reference_chosen, "reference_chosen"), _require(
            self.reference_rejected, "reference_rejected"
        )

    @property
    def scores(self) -> tuple[torch.Tensor, torch.Tensor]:
        return _require(self.score_chosen, "score_chosen"), _require(self.score_rejected, "score_rejected")

    @property
    def log_sum_sq_probs(self) -> tuple[torch.Tensor, torch.Tensor]:
        return (
            _require(self.chosen_log_sum_sq_probs, "chosen_log_sum_sq_probs"),
            _require(self.rejected_log_sum_sq_probs, "rejected_log_sum_sq_probs"),
        )

    @property
    def chosen_contrast(self) -> torch.Tensor:
        return _require(self.policy_chosen_contrast, "policy_chosen_contrast")

    @property
    def reference_contrast(self) -> torch.Tensor:
        return _require(self.reference_chosen_contrast, "reference_chosen_contrast")

    @property
    def batch_size(self) -> int:
        return int(self.policy_chosen.shape[0])


def _require(value: torch.Tensor | None, name: str) -> torch.Tensor:
    if value is None:
        raise ValueError(f"{name} is None but this quantity needs it")
    return value


def _rows(mask: torch.Tensor, limit: int = 10) -> str:
    rows = torch.nonzero(mask.reshape(-1)).reshape(-1).tolist()
    shown = ", ".join(str(r) for r in rows[:limit])
    return f"rows [{shown}{', ...' if len(rows) > limit else ''}] ({len(rows)} of {mask.numel()})"


def validate_and_cast(
    pair: PairLogps,
    *,
    needs_reference: bool,
    objective: str,
    ld_alpha: bool = False,
    weighting: bool = False,
    contrast: bool = False,
) -> PairLogps:
    """Check shapes and values; return a copy computed in float32 (float64 stays float64).

    Raises ValueError naming the field and the offending rows for: a non-tensor or non-1-D field, a
    batch-size mismatch, a length < 1, a NaN log-prob, a NaN/inf score, only one of the two scores,
    and a missing reference where the objective needs one; with `ld_alpha` / `weighting`, a missing
    `*_shared` / `*_log_sum_sq_probs` field; with `contrast` (an image term), a missing
    `policy_chosen_contrast`, or a missing `reference_chosen_contrast` where the pair has references.
    """
    if not isinstance(pair, PairLogps):
        raise TypeError(f"expected PairLogps, got {type(pair).__name__}")
    reference = pair.policy_chosen.shape if isinstance(pair.policy_chosen, torch.Tensor) else None
    for name in _FIELDS:
        value = getattr(pair, name)
        if value is None:
            continue
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor of shape (B,), got {type(value).__name__}")
        if value.dim() != 1:
            raise ValueError(f"{name} must have shape (B,), got {tuple(value.shape)}")
        if value.shape != reference:
            raise ValueError(
                f"shape mismatch: {name} has shape {tuple(value.shape)} but policy_chosen has "
                f"{tuple(reference) if reference is not None else None}"
            )
    if needs_reference and not pair.has_reference:
        missing = [n for n in ("reference_chosen", "reference_rejected") if getattr(pair, n) is None]
        raise ValueError(f"objective {objective!r} needs reference log-probs: {', '.join(missing)} is None")
    required = [
        *(_SHARED[:2] if ld_alpha else ()),
        *(_SHARED[2:] if ld_alpha and needs_reference else ()),
        *(_LOG_SUM_SQ if weighting else ()),
    ]
    missing = [n for n in required if getattr(pair, n) is None]
    if missing:
        why = (
            "ld_alpha needs each response's log-prob sum over its first min(|y_w|, |y_l|) tokens"
            if ld_alpha and set(missing) & set(_SHARED)
            else "use_weighting needs Σ_t log Σ_v π(v)² of each response"
        )
        raise ValueError(f"{why}: {', '.join(missing)} is None (the models layer must supply it)")
    if contrast:
        wanted = _CONTRAST if pair.reference_chosen is not None else _CONTRAST[:1]
        absent = [n for n in wanted if getattr(pair, n) is None]
        if absent:
            raise ValueError(
                f"an image term (image_term) compares the chosen response under the real and a contrast image: "
                f"{', '.join(absent)} is None (give the chosen response's summed log-probs under the contrast "
                f"image, or set image_term to null)"
            )
    if (pair.score_chosen is None) != (pair.score_rejected is None):
        given = "score_chosen" if pair.score_chosen is not None else "score_rejected"
        raise ValueError(f"only {given} was given: pass both score_chosen and score_rejected, or neither")

    dtype = torch.float64 if pair.policy_chosen.dtype == torch.float64 else torch.float32
    cast: dict[str, Any] = {n: (None if getattr(pair, n) is None else getattr(pair, n).to(dtype)) for n in _FIELDS}

    for name in ("chosen_lengths", "rejected_lengths"):
        bad = ~(cast[name] >= 1)  # also catches NaN
        if bad.any():
            raise ValueError(f"{name} must be >= 1 (a response has at least one token): {_rows(bad)}")
    logps = ("policy_chosen", "policy_rejected", "reference_chosen", "reference_rejected")
    for name in (*logps, *_SHARED, *_LOG_SUM_SQ, *_CONTRAST):
        if cast[name] is not None and torch.isnan(cast[name]).any():
            raise ValueError(f"{name} is NaN in {_rows(torch.isnan(cast[name]))}")
    for name in ("score_chosen", "score_rejected"):
        if cast[name] is not None and not torch.isfinite(cast[name]).all():
            raise ValueError(f"{name} is NaN or infinite in {_rows(~torch.isfinite(cast[name]))}")
    return dataclasses.replace(pair, **cast)
