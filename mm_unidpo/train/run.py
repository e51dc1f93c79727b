"""`mm-unidpo train CONFIG.yaml [--section.key=value ...]`: data → models → losses → train → report."""

from __future__ import annotations

import argparse
import json
import logging
import os
from dataclasses import dataclass
from functools import partial
from typing import Any

from mm_unidpo.cli_args import HelpFormatter
from mm_unidpo.data import BadRecordError, PreferenceRecord, load_preference_data, record_digests
from mm_unidpo.data.corruption import contrast_images, parse_corruption
from mm_unidpo.io import sha256_json
from mm_unidpo.losses import build_loss
from mm_unidpo.models import get_adapter
from mm_unidpo.models.loading import check_model_source

from .checkpoints import save_final_model
from .config import TrainConfig, load_config, training_arguments
from .output_dir import check_resume, prepare_output_dir
from .preflight import preflight
from .reference import cache_key, compute_reference_logps, load_or_compute
from .report import write_report
from .setup import build_models, reads_weights_before_training, whole_weights
from .trainer import PreferenceTrainer, RecordDataset

logger = logging.getLogger(__name__)


class EmptyDataError(ValueError):
    """Nothing to train on: the source is empty, or every record was bad."""


def _load_data(config: TrainConfig, source: str | None, split: str | None, what: str):
    if not source:
        return None
    d = config.data
    # A record that does not fit a format the config forced: say which format and where it was set.
    forced = (
        ""
        if d.format in (None, "auto")
        else f" (read as format {d.format!r}, forced by {config.origins.get('data.format', 'data.format')}; "
        "leave data.format out to detect the format)"
    )
    try:
        data = load_preference_data(
            source,
            format=d.format,
            split=split,
            image_root=d.image_root,
            on_bad_record=d.on_bad_record,
            limit=d.limit,
            unique_ids=d.unique_ids,
        )
    except BadRecordError as error:
        if forced and error.reason in ("missing_field", "malformed_record"):
            error.args = (f"{what} {source}: {error}{forced}",)
        raise
    if not data.records:
        shapes = {"missing_field", "malformed_record"} & set(data.skips.counts)
        raise EmptyDataError(f"{what}: {data.describe_empty()}" + (forced if shapes else ""))
    return data


@dataclass
class CheckedData:
    """The records training sees (after the pre-flight pass), their digests, and what was dropped."""

    records: list
    digests: list | None
    skips: Any  # SkipReport: loader and pre-flight skips, each record once
    truncated: int | None  # pairs cut at max_length, once each (None: not checked before training)
    lengths: list[int] | None = None  # packed length of each record (None: not checked before training)


def _check_data(config: TrainConfig, data, adapter, output_dir: str, what: str, need_digests: bool) -> CheckedData:
    """The pre-flight pass over `data` (main process first, so the others read its cache)."""
    from accelerate import PartialState

    d = config.data
    digests = record_digests(data.records) if d.preflight or need_digests else None
    if not d.preflight:
        return CheckedData(data.records, digests, data.skips, None)
    cache_dir = d.preflight_cache_dir or os.path.join(output_dir, "preflight_cache")
    with PartialState().main_process_first():
        result = preflight(
            data.records,
            adapter,
            on_bad_record=d.on_bad_record,
            digests=digests,
            cache_dir=cache_dir,
            workers=d.preflight_workers,
            description=f"{what} {data.source}",
        )
    if not result.records:
        raise EmptyDataError(
            f"{what} {data.source}: no usable preference records: the pre-flight check dropped all "
            f"{len(data.records)} that loaded ({result.skips.summary()})"
        )
    return CheckedData(
        result.records,
        [digests[i] for i in result.kept] if digests is not None else None,
        data.skips.merged(result.skips),
        result.truncated,
        result.lengths,
    )


def _pair_lengths(adapter, data: CheckedData) -> list[int]:
    """Packed tokens of every training pair, for the token-budget batches (from the pre-flight pass if it ran)."""
    if data.lengths is not None:
        return data.lengths
    from tqdm.auto import tqdm

    return [adapter.packed_length(adapter.encode(r)) for r in tqdm(data.records, desc="pair lengths", unit="pair")]


def _contrast_options(config: TrainConfig, pool: list[PreferenceRecord]) -> dict[str, Any]:
    """The adapter's contrast views when the loss has an image term (data/corruption.py): seeded per
    record, `shuffle` drawing from the training records. The key names the settings and the records' ids
    and positions the views are drawn from, so the reference cache misses when either changes."""
    corruption = parse_corruption(config.data.corruption)
    if not build_loss(config.loss.name, config.loss.params, config.loss.mixture).needs_contrast:
        if corruption is not None:
            logger.warning("data.corruption is set but the loss has no image_term: no contrast view is scored")
        return {}
    assert corruption is not None  # checks.py: an image term needs data.corruption
    return {
        "contrast_views": partial(contrast_images, corruption=corruption, pool=pool),
        "contrast_key": sha256_json([corruption.key(), [(r.id, r.index) for r in pool]]),
    }


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

    resume = config.train.pop("resume_from_checkpoint", None)
    overwrite = bool(config.train.pop("overwrite_output_dir", False))
    args = training_arguments(config)
    prepare_output_dir(args.output_dir, resume=resume, overwrite=overwrite)  # before any work is done
    set_seed(args.seed)
    # A missing checkpoint and a bad data file fail in seconds, before a model is loaded.
    check_model_source(config.model.name_or_path)
    train_data = _load_data(config, config.data.train, config.data.split, "data.train")
    eval_data = _load_data(config, config.data.eval, config.data.eval_split or config.data.split, "data.eval")
    with whole_weights(args, reads_weights_before_training(config)):
        model, processor, reference_model = build_models(config, args.gradient_checkpointing)
    m = config.model
    adapter = get_adapter(
        model,
        processor,
        family=m.family,
        max_length=config.data.max_length,
        on_bad_record=config.data.on_bad_record,
        shared_prefix=m.shared_prefix,
        pack_pairs=m.pack_pairs,
        max_tokens_per_row=m.max_tokens_per_row,
        head_chunk_size=m.head_chunk_size,
        token_weight=m.token_weight,
        **_contrast_options(config, train_data.records),
    )
    train_set = _check_data(config, train_data, adapter, args.output_dir, "data.train", config.reference.precompute)
    eval_set = _check_data(config, eval_data, adapter, args.output_dir, "data.eval", False) if eval_data else None

    reference_logps = None
    if config.reference.precompute:
        cache_dir = config.reference.cache_dir or os.path.join(args.output_dir, "reference_cache")
        key = cache_key(train_set.records, model, adapter, {**vars(config.model)}, train_set.digests)
        reference_model_for_cache = reference_model if reference_model is not None else model
        with PartialState().main_process_first():
            reference_logps, _hit = load_or_compute(
                cache_dir,
                key,
                lambda: compute_reference_logps(
                    reference_model_for_cache,
                    adapter,
                    train_set.records,
                    batch_size=config.reference.batch_size,
                    device=args.device,
                    disable_adapter=reference_model is None,
                ),
                row_keys=train_set.digests,
            )
        reference_model = None  # the cache replaces it: free its memory

    trainer = PreferenceTrainer(
        model=model,
        args=args,
        train_dataset=RecordDataset(train_set.records),
        eval_dataset=RecordDataset(eval_set.records) if eval_set else None,
        processing_class=processor,
        adapter=adapter,
        loss_name=config.loss.name,
        loss_params=config.loss.params,
        loss_mixture=config.loss.mixture,
        reference_model=reference_model,
        reference_logps=reference_logps,
        run_config=config.to_dict(),
        skipped_before_training=train_set.skips.total + (eval_set.skips.total if eval_set else 0),
        max_tokens_per_batch=config.data.max_tokens_per_batch,
        ref_model_sync=(
            (config.reference.ref_model_mixup_alpha, config.reference.ref_model_sync_steps)
            if config.reference.sync_ref_model
            else None
        ),
        pair_lengths=_pair_lengths(adapter, train_set) if config.data.max_tokens_per_batch else None,
    )
    checkpoint = _resume_target(resume, args.output_dir)
    check_resume(checkpoint, config.to_dict())
    result = trainer.train(resume_from_checkpoint=checkpoint)
    final_dir = save_final_model(trainer, args.output_dir)
    # Every record counted once: at loading, in the pre-flight pass, or (without it) at collate time.
    skipped = train_set.skips.merged(trainer.collate_skips)
    summary = {
        "train_loss": result.training_loss,
        "global_step": result.global_step,
        "final_dir": final_dir,
        "skipped_records": dict(skipped.counts),
        "truncated_pairs": (train_set.truncated if train_set.truncated is not None else len(trainer.truncated_records)),
    }
    if eval_set is not None:
        summary["eval_skipped_records"] = dict(eval_set.skips.counts)
    if trainer.is_world_process_zero():
        report = write_report(
            args.output_dir,
            trainer.state.log_history,
            trainer.pair_details,
            trainer.pair_details_steps,
            summary,
            config,
        )
        summary["report"] = report
        logger.info("training done: %s", json.dumps({k: v for k, v in summary.items() if k != "report"}))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mm-unidpo train", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("config", help="YAML config (see configs/)")
    parser.add_argument("overrides", nargs="*", help="--section.key=value, e.g. --loss.params.beta=0.5")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier run in train.output_dir (default: refuse to reuse the folder)",
    )
    args, unknown = parser.parse_known_args(argv)
    overrides = [*args.overrides, *unknown, *(["--train.overwrite_output_dir=true"] if args.overwrite else [])]
    config = load_config(args.config, overrides)
    summary = train(config)
    if "report" in summary:
        print(f"report: {summary['report']}")
    return 0
