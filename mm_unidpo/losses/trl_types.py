"""TRL's DPOTrainer loss types under TRL's own names, with TRL 1.16's semantics (`_compute_loss`).

Notation as in objectives.py; r = L − L^ref is the summed log-ratio of a response, s = f'(π/π_ref) its
score under the chosen f-divergence (s = r for the reverse KL, divergence.py), Δ = s_w − s_l. All
scores are from summed log-probs unless said otherwise. `chosen_scale` is AdaDPO's c_w (balance.py):
only the objectives of the single difference Δ take it (robust, exo_pair, discopop); the others
score each response on its own or sort the batch, and refuse `balance` in the registry.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .objectives import Terms, _log_ratios, _terms, dpo
from .pair import PairLogps


def _ratios(pair: PairLogps) -> tuple[torch.Tensor, torch.Tensor]:
    ref_chosen, ref_rejected = pair.reference
    return pair.policy_chosen - ref_chosen, pair.policy_rejected - ref_rejected


def sigmoid(
    pair: PairLogps,
    chosen_scale: torch.Tensor | float = 1.0,
    *,
    beta: float = 0.1,
    f_divergence_type: str = "reverse_kl",
    f_alpha_divergence_coef: float = 0.5,
    image_margin: torch.Tensor | float = 0.0,
) -> Terms:
    """TRL's `sigmoid`: `dpo` (objectives.py) without label smoothing, as TRL 1.16 has it — so a shared
    `label_smoothing` in a mixture (TRL's one value for robust, exo_pair, aot) leaves it alone.

        loss = −log σ(βΔ)

    Composes with balance and Uni-DPO's pair weights. Rewards reported as TRL's: β·r.
    """
    terms = dpo(
        pair,
        chosen_scale,
        beta=beta,
        f_divergence_type=f_divergence_type,
        f_alpha_divergence_coef=f_alpha_divergence_coef,
        image_margin=image_margin,
    )
    return _terms(terms.per_pair, beta, *_ratios(pair))


def sigmoid_norm(
    pair: PairLogps,
    chosen_scale: torch.Tensor | float = 1.0,
    *,
    beta: float = 0.1,
    f_divergence_type: str = "reverse_kl",
    f_alpha_divergence_coef: float = 0.5,
    image_margin: torch.Tensor | float = 0.0,
) -> Terms:
    """TRL's `sigmoid_norm`: `dpo` with `length_normalize` (each score divided by its response's length),
    without label smoothing.

        loss = −log σ(β(s_w/|y_w| − s_l/|y_l|))       (the mean token log-ratios for the reverse KL)

    Composes with balance and Uni-DPO's pair weights. Rewards reported as TRL's: β·r (not normalised).
    """
    terms = dpo(
        pair,
        chosen_scale,
        beta=beta,
        length_normalize=True,
        f_divergence_type=f_divergence_type,
        f_alpha_divergence_coef=f_alpha_divergence_coef,
        image_margin=image_margin,
    )
    return _terms(terms.per_pair, beta, *_ratios(pair))


def robust(
    pair: PairLogps,
    chosen_scale: torch.Tensor | float = 1.0,
    *,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    f_divergence_type: str = "reverse_kl",
    f_alpha_divergence_coef: float = 0.5,
    image_margin: torch.Tensor | float = 0.0,
) -> Terms:
    """Robust DPO (Chowdhury et al., arXiv 2403.00409): an unbiased loss when a label is flipped with
    probability ε = `label_smoothing` ∈ [0, 0.5):

        loss = [−(1 − ε)·log σ(βΔ) + ε·log σ(−βΔ)] / (1 − 2ε)

    Composes with balance and Uni-DPO's pair weights.
    """
    chosen, rejected = _log_ratios(pair, False, f_divergence_type, f_alpha_divergence_coef)
    z = beta * (chosen_scale * chosen - rejected + image_margin)
    eps = label_smoothing
    per_pair = (-(1 - eps) * F.logsigmoid(z) + eps * F.logsigmoid(-z)) / (1 - 2 * eps)
    return _terms(per_pair, beta, *_ratios(pair))


def exo_pair(
    pair: PairLogps,
    chosen_scale: torch.Tensor | float = 1.0,
    *,
    beta: float = 0.1,
    label_smoothing: float = 1e-3,
    f_divergence_type: str = "reverse_kl",
    f_alpha_divergence_coef: float = 0.5,
    image_margin: torch.Tensor | float = 0.0,
) -> Terms:
    """EXO-pref (Ji et al., arXiv 2402.00856, eq. 16): the reverse KL from the model's preference
    distribution q = softmax(β·s) over {chosen, rejected} to the smoothed label p = (1 − ε, ε):

        q_w = σ(βΔ), q_l = σ(−βΔ);   loss = q_w·(log q_w − log(1 − ε)) + q_l·(log q_l − log ε)

    ε = `label_smoothing` must be > 0 (log ε); the paper recommends 1e-3, our default (TRL's default 0
    is an error there). Composes with balance and Uni-DPO's pair weights.
    """
    chosen, rejected = _log_ratios(pair, False, f_divergence_type, f_alpha_divergence_coef)
    z = beta * (chosen_scale * chosen - rejected + image_margin)
    eps = torch.as_tensor(label_smoothing, dtype=z.dtype)
    log_qw, log_ql = F.logsigmoid(z), F.logsigmoid(-z)
    per_pair = log_qw.exp() * (log_qw - torch.log1p(-eps)) + log_ql.exp() * (log_ql - torch.log(eps))
    return _terms(per_pair, beta, *_ratios(pair))


def nca_pair(pair: PairLogps, chosen_scale: torch.Tensor | float = 1.0, *, beta: float = 0.1) -> Terms:
    """NCA (Chen et al., "Noise Contrastive Alignment", arXiv 2402.05369), pairwise, on rewards βr:

        loss = −log σ(βr_w) − ½·log σ(−βr_w) − ½·log σ(−βr_l)

    Each response is scored on its own (no single difference Δ): refuses balance; composes with
    Uni-DPO's pair weights.
    """
    r_w, r_l = _ratios(pair)
    per_pair = -F.logsigmoid(beta * r_w) - 0.5 * F.logsigmoid(-beta * r_w) - 0.5 * F.logsigmoid(-beta * r_l)
    return _terms(per_pair, beta, r_w, r_l)


class RunningMean:
    """The running mean δ of bco_pair's rewards: the equal-weight mean of every training batch's mean
    reward so far (the current batch included). Saved with the trainer state and restored on resume
    (train/trainer.py). `reduce` (set by the trainer: the mean over processes) makes every process
    add the same global batch mean, so δ is the same on every rank and equals a one-process run's."""

    def __init__(self) -> None:
        self.mean, self.count = 0.0, 0
        self.reduce: Callable[[torch.Tensor], torch.Tensor] | None = None

    def update(self, value: torch.Tensor) -> None:
        if self.reduce is not None:
            value = self.reduce(value)
        self.count += 1
        self.mean += (float(value) - self.mean) / self.count

    def state_dict(self) -> dict[str, float | int]:
        return {"mean": self.mean, "count": self.count}

    def load_state_dict(self, state: dict[str, float | int]) -> None:
        self.mean, self.count = float(state["mean"]), int(state["count"])


def bco_pair(
    pair: PairLogps,
    chosen_scale: torch.Tensor | float = 1.0,
    *,
    beta: float = 0.1,
    running_mean: bool = True,
    state: RunningMean | None = None,
    train: bool = True,
) -> Terms:
    """BCO, paired (Jung et al., "Binary Classifier Optimization", arXiv 2404.04656): each response
    classified on its own against a reward shift δ:

        loss = −log σ(βr_w − δ) − log σ(−(βr_l − δ))

    δ is the running mean of the batch-mean reward mean(βr_w ∪ βr_l), updated on training batches
    (`state`, a RunningMean the trainer saves with its checkpoints) — BCO's and earlier TRL's form,
    the one InternVL's MPO trained with. TRL 1.16 dropped δ (δ = 0): `running_mean: false` is that.
    Without a `state` δ is the current batch's mean. Refuses balance; composes with Uni-DPO's weights.
    """
    r_w, r_l = _ratios(pair)
    delta = torch.zeros((), dtype=r_w.dtype, device=r_w.device)
    if running_mean:
        with torch.no_grad():
            batch_mean = torch.cat([beta * r_w, beta * r_l]).mean()
        if state is None:
            delta = batch_mean
        else:
            if train:
                state.update(batch_mean)
            delta = torch.tensor(state.mean, dtype=r_w.dtype, device=r_w.device) if state.count else batch_mean
    per_pair = -F.logsigmoid(beta * r_w - delta) - F.logsigmoid(-(beta * r_l - delta))
    terms = _terms(per_pair, beta, r_w, r_l)
    terms.details["bco/delta"] = delta.expand_as(r_w).detach()
    return terms


def sppo_hard(pair: PairLogps, chosen_scale: torch.Tensor | float = 1.0, *, beta: float = 0.1) -> Terms:
    """SPPO with hard labels (Wu et al., arXiv 2405.00675, eq. 4.7 with P = 1 for the winner, 0 for the
    loser): each log-ratio regressed to ±1/(2β):

        loss = (r_w − 1/(2β))² + (r_l + 1/(2β))²

    Refuses balance (two separate regressions); composes with Uni-DPO's pair weights.
    """
    r_w, r_l = _ratios(pair)
    per_pair = (r_w - 0.5 / beta) ** 2 + (r_l + 0.5 / beta) ** 2
    return _terms(per_pair, beta, r_w, r_l)


def _smoothed_logistic(z: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    return -(1 - label_smoothing) * F.logsigmoid(z) - label_smoothing * F.logsigmoid(-z)


def aot(
    pair: PairLogps, chosen_scale: torch.Tensor | float = 1.0, *, beta: float = 0.1, label_smoothing: float = 0.0
) -> Terms:
    """AOT, paired (Melnyk et al., "Distributional Preference Alignment of LLMs via Optimal
    Transport", arXiv 2406.05882): first-order stochastic dominance of the policy's margins over the
    reference's, by sorting both over the batch:

        m = sort(L_w − L_l),  m_ref = sort(L^ref_w − L^ref_l)
        loss_i = −(1−ε)·log σ(β(m − m_ref)_i) − ε·log σ(−β(m − m_ref)_i)

    Row i of `per_pair` is the i-th smallest margin, not pair i: refuses balance, WPO weighting and
    Uni-DPO's pair weights (they are per pair).
    """
    margins, _ = torch.sort(pair.policy_chosen - pair.policy_rejected)
    ref_chosen, ref_rejected = pair.reference
    ref_margins, _ = torch.sort(ref_chosen - ref_rejected)
    per_pair = _smoothed_logistic(beta * (margins - ref_margins), label_smoothing)
    return _terms(per_pair, beta, *_ratios(pair))


def aot_unpaired(
    pair: PairLogps, chosen_scale: torch.Tensor | float = 1.0, *, beta: float = 0.1, label_smoothing: float = 0.0
) -> Terms:
    """AOT, unpaired (Melnyk et al., arXiv 2406.05882): the chosen log-ratios dominate the rejected
    ones as distributions:

        loss_i = −(1−ε)·log σ(β(sort(r_w) − sort(r_l))_i) − ε·log σ(−β(...)_i)

    Row i is not pair i: refuses balance, WPO weighting and Uni-DPO's pair weights.
    """
    r_w, r_l = _ratios(pair)
    per_pair = _smoothed_logistic(beta * (torch.sort(r_w)[0] - torch.sort(r_l)[0]), label_smoothing)
    return _terms(per_pair, beta, r_w, r_l)


def apo_zero(pair: PairLogps, chosen_scale: torch.Tensor | float = 1.0, *, beta: float = 0.1) -> Terms:
    """APO-zero (D'Oosterlinck et al., "Anchored Preference Optimization", arXiv 2408.06266, eq. 7),
    for chosen responses better than the model's own: raise the chosen, lower the rejected:

        loss = (1 − σ(βr_w)) + σ(βr_l)

    Refuses balance (two anchored terms); composes with Uni-DPO's pair weights.
    """
    r_w, r_l = _ratios(pair)
    per_pair = torch.sigmoid(-beta * r_w) + torch.sigmoid(beta * r_l)
    return _terms(per_pair, beta, r_w, r_l)


def apo_down(pair: PairLogps, chosen_scale: torch.Tensor | float = 1.0, *, beta: float = 0.1) -> Terms:
    """APO-down (arXiv 2408.06266, eq. 8), for chosen responses worse than the model's own: lower
    both, the rejected more:

        loss = σ(βr_w) + (1 − σ(β(r_w − r_l)))

    Refuses balance; composes with Uni-DPO's pair weights.
    """
    r_w, r_l = _ratios(pair)
    per_pair = torch.sigmoid(beta * r_w) + torch.sigmoid(-beta * (r_w - r_l))
    return _terms(per_pair, beta, r_w, r_l)


def discopop(
    pair: PairLogps,
    chosen_scale: torch.Tensor | float = 1.0,
    *,
    beta: float = 0.1,
    discopop_tau: float = 0.05,
    f_divergence_type: str = "reverse_kl",
    f_alpha_divergence_coef: float = 0.5,
    image_margin: torch.Tensor | float = 0.0,
) -> Terms:
    """DiscoPOP / log-ratio modulated loss (Chris Lu et al., "Discovering Preference Optimization
    Algorithms with and for LLMs", arXiv 2406.08414, eq. 5), z = βΔ, τ = `discopop_tau`:

        m = σ(z/τ);   loss = (1 − m)·(−log σ(z)) + m·e^(−z)

    m·e^(−z) is computed as exp(log σ(z/τ) − z), finite for any z. Composes with balance and Uni-DPO's
    pair weights.
    """
    chosen, rejected = _log_ratios(pair, False, f_divergence_type, f_alpha_divergence_coef)
    z = beta * (chosen_scale * chosen - rejected + image_margin)
    per_pair = torch.sigmoid(-z / discopop_tau) * -F.logsigmoid(z) + torch.exp(F.logsigmoid(z / discopop_tau) - z)
    return _terms(per_pair, beta, *_ratios(pair))


def sft(pair: PairLogps, chosen_scale: torch.Tensor | float = 1.0) -> Terms:
    """SFT / NLL of the chosen responses, as TRL's `sft`: the mean over every chosen token of the batch

        loss = −Σ_i L_w,i / Σ_i |y_w,i|          (per_pair holds that batch value in every row)

    Reference-free; no rejected response: refuses balance, Uni-DPO's pair weights, ld_alpha and
    rpo_alpha. Rewards reported: the mean token log-probs ℓ̄_w, ℓ̄_l.
    """
    nll = -pair.policy_chosen.sum() / pair.chosen_lengths.sum()
    per_pair = nll.expand_as(pair.policy_chosen)
    return Terms(per_pair, pair.policy_chosen_mean.detach(), pair.policy_rejected_mean.detach())
