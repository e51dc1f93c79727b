"""`mm-unidpo demo`: the embedded default.

Until the full offline alignment demo lands (issue: the embedded default), this runs the smallest real
job that exists end to end: it evaluates every objective of the loss core on one seeded batch of
sequence log-probs and prints the loss with its main metrics. Nothing here is hard-coded output.
"""

from __future__ import annotations

import argparse

import torch

from mm_unidpo.losses import LOSSES, PairLogps, preference_loss


def sample_batch(batch: int = 64, seed: int = 0) -> PairLogps:
    g = torch.Generator().manual_seed(seed)
    chosen_len = torch.randint(5, 200, (batch,), generator=g).float()
    rejected_len = torch.randint(5, 200, (batch,), generator=g).float()
    ref_w = -(torch.rand(batch, generator=g) + 0.3) * chosen_len
    ref_l = -(torch.rand(batch, generator=g) + 0.3) * rejected_len
    # a policy that has moved a little towards the chosen responses
    policy_w = ref_w + torch.randn(batch, generator=g) * 2 + 1.0
    policy_l = ref_l + torch.randn(batch, generator=g) * 2 - 1.0
    return PairLogps(policy_w, policy_l, chosen_len, rejected_len, ref_w, ref_l,
                     torch.rand(batch, generator=g) * 10, torch.rand(batch, generator=g) * 5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mm-unidpo demo")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    pair = sample_batch(seed=args.seed)
    print(f"{'objective':10s} {'loss':>9s} {'reward acc':>10s} {'margin':>9s}")
    for name in LOSSES:
        out = preference_loss(name, pair)
        print(f"{name:10s} {out.loss.item():9.4f} {out.metrics['rewards/accuracies']:10.3f} "
              f"{out.metrics['rewards/margins']:9.4f}")
    print("loss core: all objectives evaluated on one seeded batch of 64 pairs")
    return 0
