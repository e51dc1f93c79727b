"""Micro-batches by token budget: as many whole pairs as fit in `max_tokens` packed tokens.

With padding-free packing (models/packed.py) a micro-batch costs its tokens, not its longest pair times
its size, so a fixed number of pairs per micro-batch either wastes memory on short pairs or runs out
of it on long ones. This sampler shuffles the pairs each epoch, sorts each window of `window` pairs by
length (pairs of similar length share a micro-batch, so micro-batches cost about the same), fills
micro-batches next-fit up to the budget (a pair longer than the budget goes alone), and shuffles the
micro-batches. Deterministic in (seed, epoch), so resume replays the same order. Under data
parallelism every rank builds the same list and takes every `world_size`-th micro-batch; the last
`len % world_size` micro-batches of an epoch are left out so all ranks take the same number of steps
(counted in `dropped`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


class TokenBudgetBatchSampler(Sampler[list[int]]):
    def __init__(
        self,
        lengths: Sequence[int],
        max_tokens: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        window: int = 256,
        rank: int = 0,
        world_size: int = 1,
    ):
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        if not lengths:
            raise ValueError("no pairs to batch")
        self.lengths = [int(n) for n in lengths]
        self.max_tokens, self.shuffle, self.seed, self.window = max_tokens, shuffle, seed, window
        self.rank, self.world_size = rank, max(1, world_size)
        self.epoch = 0
        self.dropped = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        """Every rank's micro-batches of this epoch, in order."""
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        n = len(self.lengths)
        order = torch.randperm(n, generator=generator).tolist() if self.shuffle else list(range(n))
        out: list[list[int]] = []
        for start in range(0, n, self.window):
            window = sorted(order[start : start + self.window], key=lambda i: -self.lengths[i])
            batch: list[int] = []
            used = 0
            for i in window:
                if batch and used + self.lengths[i] > self.max_tokens:
                    out.append(batch)
                    batch, used = [], 0
                batch.append(i)
                used += self.lengths[i]
            out.append(batch)
        if self.shuffle:
            out = [out[i] for i in torch.randperm(len(out), generator=generator).tolist()]
        return out

    def _mine(self) -> list[list[int]]:
        batches = self.batches()
        usable = len(batches) - len(batches) % self.world_size
        if not usable:
            raise ValueError(
                f"{len(batches)} micro-batches of at most {self.max_tokens} tokens for {self.world_size} "
                f"processes: lower data.max_tokens_per_batch or use fewer processes"
            )
        self.dropped = len(batches) - usable
        return batches[self.rank : usable : self.world_size]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._mine())

    def __len__(self) -> int:
        return len(self._mine())
