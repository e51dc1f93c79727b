"""An output folder is never silently reused: a new run into a folder that holds an earlier run's
checkpoints or final model is refused unless the user asks to overwrite it or to resume; a resume
says which checkpoint it picked and refuses one written with other settings.

    train.overwrite_output_dir: true      (`mm-unidpo train CONFIG --overwrite`)  the old run's
                                          checkpoints, final model and state are removed first
    train.resume_from_checkpoint: true    continue from the newest checkpoint (or a path)

Settings that may change on a resume: the `train` section (more steps or epochs, logging, saving);
the model, LoRA, data, loss and reference sections must equal the checkpoint's.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from mm_unidpo.yaml_config import ConfigError

from .config import CONFIG_NAME

logger = logging.getLogger(__name__)

# What a run leaves in its output_dir (caches keyed by content are not a run: they stay).
RUN_OUTPUTS = ("final", "trainer_state.json", CONFIG_NAME, "report.md")
SAME_ON_RESUME = ("model", "lora", "data", "loss", "reference")


def earlier_run(output_dir: str) -> list[str]:
    """The names of what an earlier run left in `output_dir` (empty: nothing)."""
    if not os.path.isdir(output_dir):
        return []
    names = sorted(os.listdir(output_dir))
    return [n for n in names if n in RUN_OUTPUTS or n.startswith(("checkpoint-", "tmp-checkpoint-", "tmp-final"))]


def prepare_output_dir(output_dir: str, *, resume: Any, overwrite: bool) -> None:
    """Refuse, clear (overwrite) or keep (resume) an output folder that holds an earlier run."""
    found = earlier_run(output_dir)
    if not found or resume not in (None, False, "", "none"):
        return
    if not overwrite:
        shown = ", ".join(found[:4]) + (f" and {len(found) - 4} more" if len(found) > 4 else "")
        raise ConfigError(
            f"train.output_dir {output_dir!r} holds an earlier run ({shown}): pass --overwrite (train.overwrite_"
            f"output_dir: true) to replace it, --train.resume_from_checkpoint=true to continue it, or choose "
            f"another train.output_dir"
        )
    logger.warning("train.output_dir %s: removing the earlier run's %s (--overwrite)", output_dir, ", ".join(found))
    for name in found:
        path = Path(output_dir) / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def check_resume(checkpoint: str | None, config: dict[str, Any]) -> None:
    """Log the checkpoint a resume picked; refuse one whose run used other model/data/loss settings."""
    if checkpoint is None:
        return
    logger.info("resuming from %s", checkpoint)
    saved_file = Path(checkpoint) / CONFIG_NAME
    if not saved_file.is_file():
        logger.warning("%s has no %s: its settings cannot be compared with this run's", checkpoint, CONFIG_NAME)
        return
    saved = yaml.safe_load(saved_file.read_text(encoding="utf-8")) or {}
    differ = [
        f"{section}.{key}"
        for section in SAME_ON_RESUME
        for key in sorted(set(saved.get(section) or {}) | set(config.get(section) or {}))
        if (saved.get(section) or {}).get(key) != (config.get(section) or {}).get(key)
    ]
    if differ:
        raise ConfigError(
            f"cannot resume from {checkpoint}: it was written with other settings ({', '.join(differ[:6])}"
            f"{' ...' if len(differ) > 6 else ''}); resume with the same config, or start a new run with --overwrite "
            f"or another train.output_dir"
        )
