"""`mm-unidpo train CONFIG.yaml [--section.key=value ...]`: data → models → losses → train → report."""

from __future__ import annotations

import argparse
import json
import logging
import os
from typing import Any

from .config import TrainConfig, load_config, training_arguments

logger = logging.getLogger(__name__)


def _load_data(config: TrainConfig, source: str | None, split: str | None):
    from mm_unidpo.data import load_preference_data

    if not source:
        return None
    d = config.data
    data = load_preference_data(source, format=d.format, split=split, image_root=d.image_root,
                                on_bad_record=d.on_bad_record, limit=d.limit)
    data.skips.log(f"data {source}")
    return data


def _pair_lengths(adapter, records) -> list[int]:
    """Packed tokens of every training pair, for the token-budget batches."""
    from tqdm.auto import tqdm

    return [adapter.packed_length(adapter.encode(r)) for r in tqdm(records, desc="pair lengths", unit="pair")]


def _resume_target(value: Any, output_dir: str) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    if value in (None, False, "", "none"):
        return None
    if value in (True, "true", "auto", "latest"):
        last = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
        if last is None:
            logger.info("resume requested but no checkpoint in %s: starting fresh", output_dir)
        return last
    return str(value)


def train(config: TrainConfig) -> dict[str, Any]:
    """Run one training job; returns a summary (final metrics, output paths)."""
    from accelerate import PartialState
    from transformers import set_seed

    from mm_unidpo.models import get_adapter

    from .reference import cache_key, compute_reference_logps, load_or_compute
    from .report import write_report
    from .setup import build_models
    from .trainer import PreferenceTrainer, RecordDataset

    resume = config.train.pop("resume_from_checkpoint", None)
    args = training_arguments(config)
    set_seed(args.seed)
    model, processor, reference_model = build_models(config, args.gradient_checkpointing)
    m = config.model
    adapter = get_adapter(model, processor, family=m.family, max_length=config.data.max_length,
                          on_bad_record=config.data.on_bad_record, shared_prefix=m.shared_prefix,
                          pack_pairs=m.pack_pairs, max_tokens_per_row=m.max_tokens_per_row,
                          head_chunk_size=m.head_chunk_size)
    train_data = _load_data(config, config.data.train, config.data.split)
    eval_data = _load_data(config, config.data.eval, config.data.eval_split or config.data.split)

    reference_logps = None
    if config.reference.precompute:
        cache_dir = config.reference.cache_dir or os.path.join(args.output_dir, "reference_cache")
        key = cache_key(train_data.records, model, adapter, {**vars(config.model)})
        reference_model_for_cache = reference_model if reference_model is not None else model
        with PartialState().main_process_first():
            reference_logps, hit = load_or_compute(cache_dir, key, lambda: compute_reference_logps(
                reference_model_for_cache, adapter, train_data.records, batch_size=config.reference.batch_size,
                device=args.device, disable_adapter=reference_model is None))
        reference_model = None  # the cache replaces it: free its memory

    trainer = PreferenceTrainer(
        model=model, args=args, train_dataset=RecordDataset(train_data.records),
        eval_dataset=RecordDataset(eval_data.records) if eval_data else None, processing_class=processor,
        adapter=adapter, loss_name=config.loss.name, loss_params=config.loss.params,
        reference_model=reference_model, reference_logps=reference_logps, run_config=config.to_dict(),
        max_tokens_per_batch=config.data.max_tokens_per_batch,
        pair_lengths=_pair_lengths(adapter, train_data.records) if config.data.max_tokens_per_batch else None)
    result = trainer.train(resume_from_checkpoint=_resume_target(resume, args.output_dir))
    final_dir = os.path.join(args.output_dir, "final")
    trainer.save_model(final_dir)
    trainer.save_state()
    summary = {"train_loss": result.training_loss, "global_step": result.global_step, "final_dir": final_dir,
               "skipped_records": dict(train_data.skips.counts) | dict(adapter.skips.counts),
               "truncated_pairs": adapter.stats.truncated}
    if trainer.is_world_process_zero():
        report = write_report(args.output_dir, trainer.state.log_history, trainer.pair_details,
                              trainer.pair_details_steps, summary, config)
        summary["report"] = report
        logger.info("training done: %s", json.dumps({k: v for k, v in summary.items() if k != "report"}))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mm-unidpo train", description=__doc__)
    parser.add_argument("config", help="YAML config (see configs/)")
    parser.add_argument("overrides", nargs="*", help="--section.key=value, e.g. --loss.params.beta=0.5")
    args, unknown = parser.parse_known_args(argv)
    config = load_config(args.config, [*args.overrides, *unknown])
    summary = train(config)
    if "report" in summary:
        print(f"report: {summary['report']}")
    return 0
