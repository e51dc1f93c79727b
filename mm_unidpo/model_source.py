"""Is a model name a local path, and is it a checkpoint? Checked before anything heavy is imported, so a
typo in `--model` fails in a fraction of a second instead of after torch, transformers and lmms-eval
have loaded (this module imports neither)."""

from __future__ import annotations

import os

__all__ = ["ModelLoadError", "check_model_source", "looks_local"]


class ModelLoadError(OSError):
    """A model that cannot be loaded: the message names it and says what to do."""


def looks_local(name: str) -> bool:
    """A path rather than a hub id ("owner/name", or a bare legacy name such as "gpt2")."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name or os.path.exists(name)


def check_model_source(name_or_path: str) -> None:
    """Fail early, naming the model, if a local checkpoint path does not exist or is not a checkpoint."""
    if not name_or_path:
        raise ModelLoadError(
            "no model given: set model.name_or_path to a hub id (e.g. llava-hf/llava-1.5-7b-hf) "
            "or a local checkpoint folder"
        )
    if not looks_local(name_or_path):
        return
    path = os.path.expanduser(name_or_path)
    if not os.path.exists(path):
        raise ModelLoadError(
            f"model {name_or_path!r} is a local path that does not exist: give the folder holding the "
            f"checkpoint (config.json and *.safetensors), or a hub id such as 'llava-hf/llava-1.5-7b-hf'"
        )
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ModelLoadError(
            f"model {name_or_path!r} has no config.json: it is not a model checkpoint folder (write "
            f"one with save_pretrained, or give a hub id)"
        )
