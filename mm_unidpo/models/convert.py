"""`mm-unidpo convert SRC --out DIR`: a checkpoint's PyTorch `.bin` weights rewritten as safetensors.

    mm-unidpo convert liuhaotian/llava-v1.5-7b --out checkpoints/llava-v1.5-7b    # a hub id or a folder

The original LLaVA checkpoints (liuhaotian/llava-v1.5-*) ship `.bin` files only, and a `.bin` is a
Python pickle: loading one with plain `torch.load` can run any code stored in it. Here each file is read
with `torch.load(weights_only=True)`, which unpickles tensors and plain containers only and refuses
anything else, then written as safetensors (`huggingface_hub.save_torch_state_dict`: shards, an index,
tied weights stored once). Every other file (config, tokenizer, processor) is copied as it is, except
pickled training state (`training_args.bin`, optimizer files), which is not carried over. Load the
result like any checkpoint.
"""

from __future__ import annotations

import argparse
import json
import logging
import pickle
import shutil
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import save_torch_state_dict, snapshot_download

from mm_unidpo.cli_args import HelpFormatter

logger = logging.getLogger(__name__)

# Pickles that are not weights: never unpickled, never copied.
TRAINING_STATE = ("training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.pt")
WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


class UnsafeWeightsError(ValueError):
    """A weights file that holds more than tensors (refused: unpickling it could run code)."""


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of one `.bin` file, read with torch.load(weights_only=True) only."""
    path = Path(path)
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:  # the legacy (pre-zip) format cannot be memory-mapped
            if "mmap" not in str(error):
                raise
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise UnsafeWeightsError(
            f"{path}: refused: the file holds Python objects beyond tensors, and unpickling them could run code "
            f"stored in it ({str(error).splitlines()[0]}). Use it only if you trust its source, and convert it "
            f"in an isolated environment"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # some training scripts nest the weights
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise UnsafeWeightsError(
            f"{path}: not a weights file (expected a mapping of names to tensors, got {type(state).__name__})"
        )
    return state


def _local_dir(source: str, revision: str | None) -> Path:
    if Path(source).expanduser().is_dir():
        return Path(source).expanduser()
    return Path(snapshot_download(source, revision=revision, ignore_patterns=list(TRAINING_STATE)))


def weight_files(folder: Path) -> list[Path]:
    """The checkpoint's `.bin` weight shards: from its index when it has one, else every weights file."""
    index = folder / "pytorch_model.bin.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
        return [folder / name for name in sorted(set(weight_map.values()))]
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES and p.name not in TRAINING_STATE
    )


def convert_checkpoint(
    source: str, out: str | Path, *, revision: str | None = None, max_shard_size: str = "5GB"
) -> Path:
    """Write `source`'s weights as safetensors into `out`, with its other files; returns `out`."""
    folder, out = _local_dir(source, revision), Path(out)
    if folder.resolve() == out.resolve():
        raise ValueError(f"--out must differ from the source folder {folder}")
    shards = weight_files(folder)
    if not shards:
        if list(folder.glob("*.safetensors")):
            raise ValueError(f"{source} already has safetensors weights: nothing to convert")
        raise FileNotFoundError(f"{source}: no .bin weight files found in {folder}")
    state: dict[str, Any] = {}
    for shard in shards:
        if not shard.is_file():
            raise FileNotFoundError(f"{shard} is named in the checkpoint's index but missing")
        logger.info("reading %s (tensors only)", shard)
        state.update(load_tensors(shard))
    out.mkdir(parents=True, exist_ok=True)
    save_torch_state_dict(state, out, max_shard_size=max_shard_size, metadata={"format": "pt"})
    skipped = {p.name for p in shards} | set(TRAINING_STATE) | {"pytorch_model.bin.index.json"}
    for item in folder.iterdir():
        if item.is_file() and item.name not in skipped and item.suffix not in WEIGHT_SUFFIXES:
            shutil.copy2(item, out / item.name)
    logger.info("converted %d tensors from %d file(s) to safetensors in %s", len(state), len(shards), out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mm-unidpo convert", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("source", help="a checkpoint folder or hub id with PyTorch .bin weights")
    parser.add_argument("--out", required=True, help="where to write the safetensors checkpoint")
    parser.add_argument("--revision", help="hub revision (branch, tag or commit)")
    parser.add_argument("--max-shard-size", default="5GB")
    args = parser.parse_args(argv)
    out = convert_checkpoint(args.source, args.out, revision=args.revision, max_shard_size=args.max_shard_size)
    print(f"safetensors checkpoint: {out}")
    return 0
