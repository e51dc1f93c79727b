"""Run TRL's own DPO loss code (DPOTrainer._compute_loss) on given sequence log-probs, and compare ours.

TRL computes its loss inline from a model forward. We call its method with a stand-in `self` and a
stand-in model whose per-token log-probs sum to the sequence log-probs we want (each token holds
sum / length), and with the reference log-probs precomputed — so the arithmetic under test is TRL's,
unchanged. TRL's options are set on the stand-in `self` as `DPOTrainer.__init__` sets them from a
`DPOConfig` (loss_types, loss_weights, ld_alpha, f_divergence_type, ...).

    python -m tests.trl_stub      # the comparison table: every shared type and option, values and grads
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import torch

from mm_unidpo.losses import PairLogps, build_loss


class _Accelerator:
    device = torch.device("cpu")

    @staticmethod
    def gather(x):
        return x

    gather_for_metrics = gather


class _LogProbModel(torch.nn.Module):
    def __init__(self, per_token: torch.Tensor, log_sum_sq: torch.Tensor | None = None):
        super().__init__()
        self.per_token, self.log_sum_sq = per_token, log_sum_sq

    def forward(self, **kwargs):
        zeros = torch.zeros_like(self.per_token)
        return SimpleNamespace(log_probs=self.per_token, entropy=zeros, mean_logits=zeros,
                               is_top1=torch.zeros_like(self.per_token, dtype=torch.bool),
                               log_sum_sq_probs=self.log_sum_sq)


def run_trl_dpo_loss(trainer_cls, pair: PairLogps, beta: float, loss_types: tuple[str, ...] = ("sigmoid",),
                     loss_weights: tuple[float, ...] | None = None, ld_alpha: float | None = None,
                     f_divergence_type: str = "reverse_kl", f_alpha_divergence_coef: float = 0.5,
                     label_smoothing: float = 0.0, use_weighting: bool = False, discopop_tau: float = 0.05,
                     log_sum_sq: tuple[torch.Tensor, torch.Tensor] | None = None,
                     ) -> tuple[torch.Tensor, dict[str, float]]:
    """TRL's loss and metrics for `pair` (sums; the per-token log-probs are spread evenly). With
    `ld_alpha`, the reference sums given are already TRL's LD-weighted ones (as its precompute gives)."""
    lengths = torch.cat([pair.chosen_lengths, pair.rejected_lengths]).long()
    sums = torch.cat([pair.policy_chosen, pair.policy_rejected])
    width = int(lengths.max()) + 1
    # completion tokens sit at positions 1..n; each holds sum/n so that TRL's masked sum is the sum
    completion_mask = (torch.arange(width)[None, :] >= 1) & (torch.arange(width)[None, :] <= lengths[:, None])
    shifted = completion_mask[:, 1:].to(sums.dtype)
    per_token = shifted * (sums / lengths)[:, None]
    sq = None
    if log_sum_sq is not None:
        sq = shifted * (torch.cat(log_sum_sq) / lengths)[:, None]
    inputs = {
        "input_ids": torch.ones(len(lengths), width, dtype=torch.long),
        "attention_mask": torch.ones(len(lengths), width, dtype=torch.long),
        "completion_mask": completion_mask.long(),
        "ref_chosen_logps": pair.reference_chosen,
        "ref_rejected_logps": pair.reference_rejected,
    }
    fake_self = SimpleNamespace(
        model=SimpleNamespace(training=True), accelerator=_Accelerator(), aux_loss_enabled=False, ld_alpha=ld_alpha,
        precompute_ref_logps=True, f_divergence_type=f_divergence_type, f_alpha_divergence_coef=f_alpha_divergence_coef,
        loss_types=list(loss_types), loss_weights=list(loss_weights or [1.0] * len(loss_types)),
        label_smoothing=label_smoothing, args=SimpleNamespace(discopop_tau=discopop_tau),
        beta=beta, use_weighting=use_weighting, _metrics={"train": defaultdict(list)}, _total_train_tokens=0, _tp_size=1,
    )
    loss = trainer_cls._compute_loss(fake_self, _LogProbModel(per_token, sq), inputs, return_outputs=False)
    metrics = {k: v[-1] for k, v in fake_self._metrics["train"].items()}
    return loss, metrics


# ---- every shared type and option --------------------------------------------------------------------------

@dataclass
class Case:
    label: str
    ours: dict[str, Any]  # build_loss(**ours)
    trl: dict[str, Any]  # run_trl_dpo_loss(**trl)
    dtype: torch.dtype = torch.float64  # TRL's alpha-divergence clamp knows no float64: float32 there
    extras: tuple[str, ...] = field(default=())  # "ld", "wpo": the optional PairLogps fields to give

    @property
    def same_metrics(self) -> bool:
        """Whether our rewards are TRL's β·r: not for ipo (β·mean log-ratio), hinge with another divergence
        (β·score: ours are the dpo family's) and sft (the mean token log-probs, no reference read)."""
        first = self.label.split()[0]
        return not (first in ("ipo", "sft") or (first == "hinge" and "f=" in self.label))


BETA = 0.1
METRICS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen",
           "logps/rejected")
_TYPES = ["sigmoid", "sigmoid_norm", "hinge", "ipo", "robust", "exo_pair", "nca_pair", "bco_pair", "sppo_hard",
          "aot", "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft"]
_TYPE_PARAMS = {"robust": {"label_smoothing": 0.1}, "exo_pair": {"label_smoothing": 1e-3},
                "aot": {"label_smoothing": 0.05}, "aot_unpaired": {"label_smoothing": 0.05},
                "bco_pair": {"running_mean": False}, "discopop": {"discopop_tau": 0.05}}
_TRL_ONLY = ("running_mean",)  # ours only: TRL 1.16's bco_pair has no running mean (δ = 0)
_F_TYPES = ["sigmoid", "sigmoid_norm", "hinge", "ipo", "exo_pair", "robust", "discopop"]


def _case(label: str, loss_type: str, extra: dict[str, Any] | None = None, **kwargs: Any) -> Case:
    own = {**_TYPE_PARAMS.get(loss_type, {}), **(extra or {})}
    beta = {} if loss_type == "sft" else {"beta": BETA}
    trl = {k: v for k, v in own.items() if k not in _TRL_ONLY}
    trl.update(beta=BETA, loss_types=(loss_type,))
    return Case(label, {"name": loss_type, "params": {**beta, **own}}, trl, **kwargs)


def cases() -> list[Case]:
    out = [_case(t, t) for t in _TYPES]
    for t in _F_TYPES:
        for f in ("forward_kl", "js_divergence", "alpha_divergence"):
            dtype = torch.float32 if f == "alpha_divergence" else torch.float64
            out.append(_case(f"{t} f={f}", t, {"f_divergence_type": f, **(
                {"f_alpha_divergence_coef": 0.3} if f == "alpha_divergence" else {})}, dtype=dtype))
    for t in ("sigmoid", "ipo", "bco_pair", "apo_zero", "aot", "discopop"):
        out.append(_case(f"{t} ld_alpha=0.4", t, {"ld_alpha": 0.4}, extras=("ld",)))
    # (TRL 1.16's sft and hinge with use_weighting fail in TRL: they scale a tensor in place)
    for t in ("sigmoid", "sigmoid_norm", "ipo", "robust", "exo_pair", "nca_pair", "bco_pair", "sppo_hard", "apo_zero",
              "apo_down", "discopop"):
        out.append(_case(f"{t} use_weighting", t, {"use_weighting": True}, extras=("wpo",)))
    out.append(Case("sigmoid rpo_alpha=0.5 (TRL: sigmoid+sft, weights 1, 0.5)",
                    {"name": "sigmoid", "params": {"beta": BETA, "rpo_alpha": 0.5}},
                    {"beta": BETA, "loss_types": ("sigmoid", "sft"), "loss_weights": (1.0, 0.5)}))
    out.append(Case("mpo (TRL: sigmoid, bco_pair, sft; 0.8, 0.2, 1.0)",
                    {"name": "mpo", "params": {"beta": BETA, "running_mean": False}},
                    {"beta": BETA, "loss_types": ("sigmoid", "bco_pair", "sft"), "loss_weights": (0.8, 0.2, 1.0)}))
    # (TRL 1.16's hinge with use_weighting cannot backpropagate: it scales relu's output in place)
    out.append(Case("mixture sigmoid 0.3 + apo_down 0.7, use_weighting",
                    {"mixture": [{"name": "sigmoid", "weight": 0.3}, {"name": "apo_down", "weight": 0.7}],
                     "params": {"beta": BETA, "use_weighting": True}},
                    {"beta": BETA, "loss_types": ("sigmoid", "apo_down"), "loss_weights": (0.3, 0.7),
                     "use_weighting": True}, extras=("wpo",)))
    return out


def random_inputs(batch: int, seed: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    nw = torch.randint(1, 40, (batch,), generator=g).to(dtype)
    nl = torch.randint(1, 40, (batch,), generator=g).to(dtype)

    def per_token(low: float, high: float, n: torch.Tensor) -> torch.Tensor:
        return -(torch.rand(batch, generator=g, dtype=dtype) * (high - low) + low) * n

    def near(logps: torch.Tensor) -> torch.Tensor:  # a reference near the policy: log-ratios within ±3
        return logps + (torch.rand(batch, generator=g, dtype=dtype) * 6 - 3)

    Lw, Ll = per_token(0.05, 2.5, nw), per_token(0.05, 2.5, nl)
    return {"Lw": Lw, "Ll": Ll, "Rw": near(Lw), "Rl": near(Ll), "nw": nw, "nl": nl,
            # log Σ_v π(v)² <= log max π: between the token's log-prob and 0 on average
            "Sw": per_token(0.0, 0.05, nw), "Sl": per_token(0.0, 0.05, nl)}


def compare(case: Case, batch: int = 16, seed: int = 0) -> dict[str, float]:
    """Max abs differences between TRL's and our loss, and their gradients w.r.t. the policy sums."""
    from trl.trainer.dpo_trainer import DPOTrainer

    x = random_inputs(batch, seed, case.dtype)
    short = torch.minimum(x["nw"], x["nl"])
    ld = case.ours.get("params", {}).get("ld_alpha")
    results = []
    for side in ("trl", "ours"):
        Lw, Ll = x["Lw"].clone().requires_grad_(True), x["Ll"].clone().requires_grad_(True)
        # evenly spread tokens: the first `short` tokens hold short/n of the sum
        shared = dict(policy_chosen_shared=Lw * short / x["nw"], policy_rejected_shared=Ll * short / x["nl"],
                      reference_chosen_shared=x["Rw"] * short / x["nw"],
                      reference_rejected_shared=x["Rl"] * short / x["nl"])
        if side == "trl":
            rw, rl = x["Rw"], x["Rl"]
            if ld is not None:  # TRL's precomputed reference is already LD-weighted
                rw = shared["reference_chosen_shared"] + ld * (x["Rw"] - shared["reference_chosen_shared"])
                rl = shared["reference_rejected_shared"] + ld * (x["Rl"] - shared["reference_rejected_shared"])
            pair = PairLogps(Lw, Ll, x["nw"], x["nl"], rw, rl)
            sq = (x["Sw"], x["Sl"]) if "wpo" in case.extras else None
            loss, metrics = run_trl_dpo_loss(DPOTrainer, pair, log_sum_sq=sq, **case.trl)
        else:
            extra: dict[str, Any] = {}
            if "ld" in case.extras:
                extra.update(shared)
            if "wpo" in case.extras:
                extra.update(chosen_log_sum_sq_probs=x["Sw"], rejected_log_sum_sq_probs=x["Sl"])
            pair = PairLogps(Lw, Ll, x["nw"], x["nl"], x["Rw"], x["Rl"], **extra)
            out = build_loss(**case.ours)(pair)
            loss, metrics = out.loss, out.metrics
        grads = torch.autograd.grad(loss, (Lw, Ll), allow_unused=True)
        grads = [torch.zeros_like(Lw) if g is None else g for g in grads]
        results.append((loss.detach(), grads, metrics))
    (l_trl, g_trl, m_trl), (l_ours, g_ours, m_ours) = results
    return {"value": float((l_trl.double() - l_ours.double()).abs()),
            "grad": max(float((a.double() - b.double()).abs().max()) for a, b in zip(g_trl, g_ours)),
            "loss": float(l_trl),
            # TRL's reward and log-prob metrics (β·r, sums) where ours report them the same way
            "metrics": max((abs(m_trl[k] - m_ours[k]) for k in METRICS if k in m_ours), default=0.0)}


def main() -> None:
    print("| case | dtype | TRL loss | max abs diff, value | max abs diff, grad | rewards/logps metrics |")
    print("|---|---|---|---|---|---|")
    for case in cases():
        diffs = [compare(case, seed=seed) for seed in (0, 1, 2)]
        value, grad = max(d["value"] for d in diffs), max(d["grad"] for d in diffs)
        metrics = f"{max(d['metrics'] for d in diffs):.1e}" if case.same_metrics else "ours differ by design"
        dtype = str(case.dtype).replace("torch.", "")
        print(f"| {case.label} | {dtype} | {diffs[0]['loss']:.6g} | {value:.1e} | {grad:.1e} | {metrics} |")


if __name__ == "__main__":
    main()
