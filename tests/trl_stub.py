"""Run TRL's own DPO loss code (DPOTrainer._compute_loss) on given sequence log-probs.

TRL computes its loss inline from a model forward. We call its method with a stand-in `self` and a
stand-in model whose per-token log-probs sum to the sequence log-probs we want, and with the
reference log-probs precomputed — so the arithmetic under test is TRL's, unchanged.
"""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import torch

from mm_unidpo.losses import PairLogps


class _Accelerator:
    device = torch.device("cpu")

    @staticmethod
    def gather(x):
        return x

    gather_for_metrics = gather


class _LogProbModel(torch.nn.Module):
    def __init__(self, per_token: torch.Tensor):
        super().__init__()
        self.per_token = per_token

    def forward(self, **kwargs):
        zeros = torch.zeros_like(self.per_token)
        return SimpleNamespace(log_probs=self.per_token, entropy=zeros, mean_logits=zeros,
                               is_top1=torch.zeros_like(self.per_token, dtype=torch.bool))


def run_trl_dpo_loss(trainer_cls, pair: PairLogps, beta: float) -> tuple[torch.Tensor, dict[str, float]]:
    lengths = torch.cat([pair.chosen_lengths, pair.rejected_lengths]).long()
    sums = torch.cat([pair.policy_chosen, pair.policy_rejected])
    width = int(lengths.max()) + 1
    # completion tokens sit at positions 1..n; each holds sum/n so that TRL's masked sum is the sum
    completion_mask = (torch.arange(width)[None, :] >= 1) & (torch.arange(width)[None, :] <= lengths[:, None])
    per_token = (completion_mask[:, 1:].float() * (sums / lengths)[:, None])
    inputs = {
        "input_ids": torch.ones(len(lengths), width, dtype=torch.long),
        "attention_mask": torch.ones(len(lengths), width, dtype=torch.long),
        "completion_mask": completion_mask.long(),
        "ref_chosen_logps": pair.reference_chosen,
        "ref_rejected_logps": pair.reference_rejected,
    }
    fake_self = SimpleNamespace(
        model=SimpleNamespace(training=True), accelerator=_Accelerator(), aux_loss_enabled=False, ld_alpha=None,
        precompute_ref_logps=True, f_divergence_type="reverse_kl", loss_types=["sigmoid"], loss_weights=[1.0],
        beta=beta, use_weighting=False, _metrics={"train": defaultdict(list)}, _total_train_tokens=0, _tp_size=1,
    )
    loss = trainer_cls._compute_loss(fake_self, _LogProbModel(per_token), inputs, return_outputs=False)
    metrics = {k: v[-1] for k, v in fake_self._metrics["train"].items()}
    return loss, metrics
