"""TR-DPO: the reference moves towards the policy during training (Gorbatovski et al., "Learn Your
Reference Model for Real Good Alignment", arXiv 2404.09656), with TRL's option names:

    every `ref_model_sync_steps` (τ) optimizer steps:   θ_ref ← α·θ + (1 − α)·θ_ref,  α = `ref_model_mixup_alpha`

Only the trained parameters move (frozen ones are equal in both). With full fine-tuning they are mixed
into the frozen reference copy. With LoRA the reference was the base model (adapter disabled); here it
becomes a copy of the adapter's weights, swapped in for the reference forward (in eval mode, no
dropout) and mixed factor by factor — exact for α = 1 (a hard sync), and for α < 1 a mix of A and B
separately, not of the product BA (TR-DPO's soft update of a LoRA reference, approximated). The
reference weights are saved in each checkpoint (`reference_sync.safetensors`) and loaded on resume.
The precomputed reference cache cannot follow a moving reference, and sharded parameters (FSDP,
DeepSpeed) are not mixed here: both are refused.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers import TrainerCallback

FILE = "reference_sync.safetensors"


def check_sync(reference: Any, needs_reference: bool, loss_name: str) -> str | None:
    """Why `reference` (the config's ReferenceConfig) cannot sync, or None."""
    if not reference.sync_ref_model:
        return None
    if not needs_reference:
        return f"reference.sync_ref_model: loss {loss_name!r} reads no reference, so there is none to move"
    if reference.precompute:
        return (
            "reference.sync_ref_model moves the reference during training: the precomputed reference "
            "(reference.precompute) cannot follow it; turn one of them off"
        )
    if not 0 < reference.ref_model_mixup_alpha <= 1:
        return f"reference.ref_model_mixup_alpha must be in (0, 1], got {reference.ref_model_mixup_alpha}"
    if reference.ref_model_sync_steps < 1:
        return f"reference.ref_model_sync_steps must be >= 1, got {reference.ref_model_sync_steps}"
    return None


class ReferenceSync(TrainerCallback):
    """Holds the reference's copy of every trained parameter and mixes the policy into it every τ steps."""

    def __init__(self, model: torch.nn.Module, reference_model: torch.nn.Module | None, alpha: float, every: int):
        self.alpha, self.every = alpha, every
        trained = {name: p for name, p in model.named_parameters() if p.requires_grad}
        if reference_model is not None:  # full fine-tuning: the frozen copy's own tensors
            own = dict(reference_model.named_parameters())
            self.reference = {name: own[name].data for name in trained}
        else:  # LoRA: a copy of the adapter (B = 0 at the start: the base model, as before)
            self.reference = {name: p.detach().clone() for name, p in trained.items()}
        self.trained = trained
        self.swaps = reference_model is None

    @torch.no_grad()
    def mix(self) -> None:
        for name, p in self.trained.items():
            self.reference[name].mul_(1 - self.alpha).add_(p.detach().to(self.reference[name].dtype), alpha=self.alpha)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0:
            self.mix()

    @contextmanager
    def swapped(self, model: torch.nn.Module) -> Iterator[None]:
        """The policy's trained tensors replaced by the reference's (LoRA), in eval mode, then put back.
        The storage is swapped (`.data`), not overwritten: the policy forward of this step has saved its
        tensors for backward, and an in-place write would invalidate them."""
        originals = {name: p.data for name, p in self.trained.items()}
        training = model.training
        for name, p in self.trained.items():
            p.data = self.reference[name]
        model.eval()
        try:
            yield
        finally:
            model.train(training)
            for name, p in self.trained.items():
                p.data = originals[name]

    def save(self, directory: str) -> None:
        save_file({k: v.detach().contiguous().cpu() for k, v in self.reference.items()}, os.path.join(directory, FILE))

    def load(self, directory: str) -> None:
        path = os.path.join(directory, FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{path} is missing: the checkpoint was written without reference.sync_ref_model, "
                f"so the moved reference cannot be restored"
            )
        saved = load_file(path)
        missing = sorted(set(self.reference) - set(saved))
        if missing:
            raise ValueError(
                f"{path} lacks {len(missing)} reference tensors (e.g. {missing[0]}): another model "
                f"or LoRA setup wrote it"
            )
        with torch.no_grad():
            for name, tensor in self.reference.items():
                tensor.copy_(saved[name])
