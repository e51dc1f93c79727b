"""AdaDPO: balanced gradient updates on the preferred and the dispreferred response.

Chen et al., "AdaDPO: Self-Adaptive Direct Preference Optimization with Balanced Gradient Updates",
arXiv 2605.28440 (2026); the imbalance itself: Ma et al., arXiv 2502.20847; Feng et al., arXiv 2404.04626.

In probability space DPO's gradients satisfy |∂L/∂π_l| / |∂L/∂π_w| = π_w / π_l: the dispreferred
response is pushed down faster than the preferred one is pulled up. AdaDPO scales each objective's
chosen term by a stop-gradient coefficient c_w (c_l = 1) with c_w / c_l = π_w / π_l, so both pushes
have the same size. The practical form balances per-token quantities and clips:

    policy space:  c_w = min(C, exp(ℓ̄_w − ℓ̄_l))
    ratio space:   c_w = min(C, exp((ℓ̄_w − ℓ̄^ref_w) − (ℓ̄_l − ℓ̄^ref_l)))

For DPO with the chosen log-ratio scaled by c_w this gives ∂loss/∂L_w = −c_w · ∂loss/∂L_l exactly.
The paper's exact published formula was not available to us; this is derived from its construction
and lives in this one function so that it is easy to swap.
"""

from __future__ import annotations

import math

import torch

from .pair import PairLogps

BALANCE_SPACES = ("policy", "ratio")


def balance_coefficient(pair: PairLogps, space: str, clip: float = 2.0) -> torch.Tensor:
    """Return the detached per-pair coefficient c_w, shape (B,), in `space` ("policy" or "ratio")."""
    if space not in BALANCE_SPACES:
        raise ValueError(f"balance must be one of {BALANCE_SPACES} or None, got {space!r}")
    if not clip > 0:
        raise ValueError(f"balance_clip must be > 0, got {clip}")
    with torch.no_grad():
        log_coef = pair.policy_chosen_mean - pair.policy_rejected_mean
        if space == "ratio":
            if not pair.has_reference:
                raise ValueError("balance='ratio' needs reference log-probs (reference_chosen/rejected)")
            log_coef = log_coef - (pair.reference_chosen_mean - pair.reference_rejected_mean)
        # min(C, exp(x)) == exp(min(log C, x)), without overflowing exp for large x.
        return torch.exp(torch.clamp(log_coef, max=math.log(clip))).detach()
