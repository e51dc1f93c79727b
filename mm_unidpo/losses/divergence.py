"""f-DPO: the reward of a response under another f-divergence than the reverse KL.

Wang et al., "Beyond Reverse KL: Generalizing Direct Preference Optimization with Diverse Divergence
Constraints", arXiv 2309.16240. With u = log π(y)/π_ref(y) (the summed log-ratio) and t = e^u, DPO's
implicit reward β·u becomes β·f'(t):

    reverse_kl        f'(t) = log t                        → u                 (plain DPO)
    forward_kl        f'(t) = 1 − 1/t                      → 1 − e^(−u)
    js_divergence     f'(t) = log(2t / (1 + t))            → log 2 + log σ(u)
    alpha_divergence  f'(t) = (t^(α−1) − 1) / (α − 1)      → (e^((α−1)u) − 1) / (α − 1); α → 1 is reverse_kl

The reparameterisation leaves a β·log Z(x) term that cancels only in the chosen − rejected difference,
so only objectives built on that difference accept another divergence (as in TRL 1.16: sigmoid,
sigmoid_norm, hinge, ipo, exo_pair, robust, discopop).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# e^x overflows float32 past ~88.7: the alpha-divergence exponent is capped below that (as TRL caps it).
_MAX_EXPONENT = 80.0


def f_scores(
    log_ratio: torch.Tensor, f_divergence_type: str = "reverse_kl", f_alpha_divergence_coef: float = 0.5
) -> torch.Tensor:
    """f'(π/π_ref) of each response from its log-ratio u (any shape), as in the table above."""
    if f_divergence_type == "reverse_kl":
        return log_ratio
    if f_divergence_type == "forward_kl":
        return -torch.expm1(-log_ratio)
    if f_divergence_type == "js_divergence":
        return math.log(2.0) + F.logsigmoid(log_ratio)
    if f_divergence_type == "alpha_divergence":
        if abs(f_alpha_divergence_coef - 1.0) < 1e-6:
            return log_ratio
        a = f_alpha_divergence_coef - 1.0
        return torch.expm1(torch.clamp(a * log_ratio, max=_MAX_EXPONENT)) / a
    raise ValueError(f"unknown f_divergence_type {f_divergence_type!r}")
