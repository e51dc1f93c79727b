"""Durable checkpoints: a checkpoint or the final model is written under a staging name and renamed when
complete, so a crash mid-save never leaves a `checkpoint-N` that resume would pick; a full disk is one
clear error naming the directory; saved tensors carry a checksum that is verified when they are read back.

    with removed_if_disk_full(staging, "the final model"):   # a write failure: CheckpointWriteError
        ...
    publish(staging, final)                                   # rename the complete directory into place
    save_checkpoint_atomically(trainer, trial, save)          # the Trainer's checkpoint, staged
    tensors_checksum(tensors)                                 # sha256 over names, dtypes, shapes and bytes
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import transformers.trainer as hf_trainer
from transformers.trainer_utils import rotate_checkpoints

from mm_unidpo.io import sha256_chunks

STAGING_PREFIX = "tmp-checkpoint"  # never matched by `get_last_checkpoint`, so never resumed from


class CheckpointWriteError(OSError):
    """A checkpoint (or the final model) could not be written: the disk is full, or the directory is not writable."""


@contextmanager
def removed_if_disk_full(directory: str, what: str) -> Iterator[None]:
    """Turn a write failure (no space left, quota, permissions...) into one clear error naming `directory`,
    after removing the partial `directory` (a staging name, never a finished checkpoint). Other
    interruptions (a kill, Ctrl-C) leave it for inspection: a `tmp-checkpoint-N` is never picked by resume."""
    try:
        yield
    except OSError as error:
        if isinstance(error, CheckpointWriteError):
            raise
        shutil.rmtree(directory, ignore_errors=True)
        reason = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded"}.get(
            error.errno or 0, error.strerror or str(error)
        )
        parent = os.path.dirname(os.path.abspath(directory))
        free = f" ({shutil.disk_usage(parent).free / 2**30:.1f} GiB free there now)" if os.path.isdir(parent) else ""
        failure = CheckpointWriteError(
            f"could not write {what} to {directory}: {reason} ({error}); the partial directory was removed{free}. "
            f"Free space (or lower train.save_total_limit, or point train.output_dir elsewhere), then resume with "
            f"--train.resume_from_checkpoint=true"
        )
        failure.errno = error.errno
        raise failure from error


def publish(staging: str, final: str) -> None:
    """Rename a completely written `staging` directory to `final`, replacing an older one."""
    if os.path.isdir(final):
        shutil.rmtree(final)
    os.replace(staging, final)


def save_checkpoint_atomically(trainer: Any, trial: Any, save: Callable[[], None]) -> None:
    """Run the Trainer's own checkpoint `save` under a staging name (`tmp-checkpoint-N`), then rename it to
    `checkpoint-N` and rotate old ones; rotation waits until the new checkpoint is complete, or a crash could
    leave none."""
    run_dir = trainer._get_output_dir(trial=trial)
    step = trainer.state.global_step
    final = os.path.join(run_dir, f"checkpoint-{step}")
    staging = os.path.join(run_dir, f"{STAGING_PREFIX}-{step}")
    original_prefix, limit = hf_trainer.PREFIX_CHECKPOINT_DIR, trainer.args.save_total_limit
    hf_trainer.PREFIX_CHECKPOINT_DIR, trainer.args.save_total_limit = STAGING_PREFIX, None
    try:
        with removed_if_disk_full(staging, f"checkpoint-{step}"):
            save()
    finally:
        hf_trainer.PREFIX_CHECKPOINT_DIR, trainer.args.save_total_limit = original_prefix, limit
    trainer.accelerator.wait_for_everyone()
    if trainer.args.should_save:
        publish(staging, final)
        rotate_checkpoints(
            output_dir=run_dir,
            save_total_limit=limit,
            best_model_checkpoint=trainer.state.best_model_checkpoint,
            use_mtime=False,
        )
    trainer.accelerator.wait_for_everyone()


def save_final_model(trainer: Any, output_dir: str) -> str:
    """The trained model and the trainer state in `<output_dir>/final`, staged in `tmp-final` and renamed
    when complete (by the process that saves). Returns the final directory."""
    final_dir, staging = os.path.join(output_dir, "final"), os.path.join(output_dir, "tmp-final")
    with removed_if_disk_full(staging, "the final model"):
        trainer.save_model(staging)
        trainer.save_state()
    trainer.accelerator.wait_for_everyone()
    if trainer.args.should_save:
        publish(staging, final_dir)
    return final_dir


def tensors_checksum(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""

    def chunks() -> Iterator[bytes]:
        for name in sorted(tensors):
            tensor = tensors[name].detach().cpu().contiguous()
            yield json.dumps([name, str(tensor.dtype), list(tensor.shape)]).encode()
            yield tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b""

    return sha256_chunks(chunks())
