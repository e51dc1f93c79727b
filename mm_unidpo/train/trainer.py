"""The preference trainer: a `transformers.Trainer` whose step is

    adapter log-probs (policy)  →  reference log-probs (cache | adapter disabled | frozen copy)
    →  preference_loss(objective, ...)  →  metrics

Everything else — optimisation, gradient accumulation, checkpointing, resume with RNG state and data
order, DDP / FSDP / DeepSpeed through accelerate, report_to — is the Trainer's own.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from contextlib import nullcontext
from functools import partial
from typing import Any

import torch
from accelerate import PartialState
from torch.utils.data import DataLoader, Dataset
from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import ExportableState
from transformers.trainer_utils import seed_worker

from mm_unidpo.data.batching import TokenBudgetBatchSampler
from mm_unidpo.data.records import PreferenceRecord, SkipReport
from mm_unidpo.losses import Loss, PairLogps, build_loss
from mm_unidpo.models import Adapter, PairBatch, SequenceLogps

from .checkpoints import STAGING_PREFIX, save_checkpoint_atomically
from .config import save_run_config
from .sync import ReferenceSync

logger = logging.getLogger(__name__)

# Per-pair values kept over the whole run for the report's histograms.
TRACKED_DETAILS = ("weights/quality", "weights/perf", "balance/coef")
PAIR_DETAILS = "pair_details.json"  # in every checkpoint: a resumed run's report covers the whole run


class RecordDataset(Dataset):
    """Preference records by position; the position is what the reference cache is keyed on."""

    def __init__(self, records: list[PreferenceRecord]):
        self.records = records

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[int, PreferenceRecord]:
        return i, self.records[i]


class PairCollator:
    def __init__(self, adapter: Adapter):
        self.adapter = adapter

    def __call__(self, items: list[tuple[int, PreferenceRecord]]) -> dict[str, Any]:
        batch = self.adapter.collate([record for _, record in items])
        positions = [position for position, _ in items]
        if batch.kept is not None:
            positions = [positions[i] for i in batch.kept]
        return {"batch": batch, "positions": torch.tensor(positions, dtype=torch.long)}


class LossStateCallback(TrainerCallback, ExportableState):
    """Saves the loss's running state (bco_pair's δ) in every checkpoint's trainer_state.json;
    `PreferenceTrainer._load_callback_state` puts it back on resume."""

    def __init__(self, loss: Loss | None = None, saved: dict[str, Any] | None = None):
        self.loss, self.saved = loss, saved

    def state(self) -> dict[str, Any]:
        return {"args": {}, "attributes": {"saved": self.loss.state_dict() if self.loss is not None else self.saved}}


class LaunchLog(TrainerCallback):
    """Says once how the model is spread over the processes, and warns where the launch asked for more:
    accelerate runs FSDP and DeepSpeed on GPUs only (on CPUs, train.use_cpu trains as plain DDP), and
    without train.use_cpu on a machine with no GPU each launched process trains alone."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if not state.is_world_process_zero:
            return
        kind = PartialState().distributed_type.value
        if args.world_size > 1:
            logger.info(
                "training on %d processes (%s): the model runs as %s", args.world_size, kind, type(model).__name__
            )
        launched = int(os.environ.get("WORLD_SIZE", "1"))
        if launched != args.world_size:
            logger.warning(
                "launched as %d processes but training sees %d: each process trains alone on all the data "
                "(no GPU here: set train.use_cpu: true to train together)",
                launched,
                args.world_size,
            )
        for asked, flag in (("FSDP", "ACCELERATE_USE_FSDP"), ("DEEPSPEED", "ACCELERATE_USE_DEEPSPEED")):
            if os.environ.get(flag, "").lower() in ("1", "true") and kind != asked:
                logger.warning(
                    "accelerate launch asked for %s but training runs as %s: parameters are not sharded "
                    "(accelerate shards on GPUs only)",
                    asked,
                    kind,
                )


class PreferenceTrainer(Trainer):
    def __init__(
        self,
        *args: Any,
        adapter: Adapter,
        loss_name: str | None,
        loss_params: dict[str, Any] | None = None,
        loss_mixture: list[dict[str, Any]] | None = None,
        reference_model: Any = None,
        reference_logps: dict[str, torch.Tensor] | None = None,
        run_config: dict[str, Any] | None = None,
        skipped_before_training: int = 0,
        max_tokens_per_batch: int | None = None,
        pair_lengths: list[int] | None = None,
        ref_model_sync: tuple[float, int] | None = None,
        **kwargs: Any,
    ):
        kwargs.setdefault("data_collator", PairCollator(adapter))
        self.loss = build_loss(loss_name, loss_params, loss_mixture)  # checked here; holds bco_pair's δ
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), LaunchLog()]
        if self.loss.stateful:
            kwargs["callbacks"].append(LossStateCallback(self.loss))
        super().__init__(*args, **kwargs)
        self.adapter = adapter
        self.loss_name = loss_name
        self.loss_params = dict(loss_params or {})
        self.reference_model = reference_model
        self.reference_logps = reference_logps
        self.run_config = run_config
        if max_tokens_per_batch is not None and pair_lengths is None:
            raise ValueError("max_tokens_per_batch needs the packed length of every training pair (pair_lengths)")
        self.max_tokens_per_batch, self.pair_lengths = max_tokens_per_batch, pair_lengths
        self.skipped_before_training = skipped_before_training  # loader + pre-flight skips, logged with ours
        # Records the collator left out or truncated (without the pre-flight pass), each counted once.
        self.collate_skips = SkipReport()
        self.truncated_records: set[tuple[int | None, str | None]] = set()
        # Our loss is already a mean over pairs: the Trainer must divide it by the accumulation steps.
        self.model_accepts_loss_kwargs = False
        self._stored: dict[str, dict[str, list[float]]] = {"train": defaultdict(list), "eval": defaultdict(list)}
        self.pair_details: dict[str, list[float]] = defaultdict(list)
        self.pair_details_steps: dict[str, list[int]] = defaultdict(list)
        if reference_model is not None:
            self.reference_model = reference_model.to(self.args.device)
        # bco_pair's running δ: the same on every process (the mean of their batch means)
        self.loss.set_reduce(lambda value: self.accelerator.reduce(value, reduction="mean"))
        self.reference_sync: ReferenceSync | None = None
        if ref_model_sync is not None:  # TR-DPO (sync.py)
            if self.is_fsdp_enabled or self.is_deepspeed_enabled or reference_logps is not None:
                raise ValueError(
                    "reference.sync_ref_model works with DDP or one process and a live reference only "
                    "(not FSDP, DeepSpeed or a precomputed reference)"
                )
            assert isinstance(self.model, torch.nn.Module)
            self.reference_sync = ReferenceSync(self.model, self.reference_model, *ref_model_sync)
            self.add_callback(self.reference_sync)

    # ---- data ---------------------------------------------------------------------------------------

    def get_train_dataloader(self):
        """With `max_tokens_per_batch`: micro-batches by token budget (data/batching.py) instead of a fixed count."""
        if self.max_tokens_per_batch is None:
            return super().get_train_dataloader()
        assert self.pair_lengths is not None and self.train_dataset is not None  # checked in __init__ / by train()
        sampler = TokenBudgetBatchSampler(
            self.pair_lengths,
            self.max_tokens_per_batch,
            seed=self.args.seed,
            rank=self.args.process_index,
            world_size=self.args.world_size,
        )
        loader = self.accelerator.prepare(
            DataLoader(
                self.train_dataset,
                batch_sampler=sampler,
                collate_fn=self.data_collator,
                num_workers=self.args.dataloader_num_workers,
                pin_memory=self.args.dataloader_pin_memory,
                worker_init_fn=partial(
                    seed_worker, num_workers=self.args.dataloader_num_workers, rank=self.args.process_index
                ),
            )
        )
        # The sampler already gives each rank its share: accelerate's shard wrapper must pass it through.
        shard = getattr(loader, "batch_sampler", None)
        if shard is not None and getattr(shard, "batch_sampler", None) is sampler:
            shard.num_processes, shard.process_index = 1, 0
        return loader

    # ---- the step -----------------------------------------------------------------------------------

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        batch = inputs["batch"].to(self.args.device)
        self._count_bad_records(batch)
        policy = self.adapter.sequence_logps(model, batch, log_sum_sq=self.loss.needs_log_sum_sq)
        ref = self._reference(model, batch, inputs["positions"])
        pair = PairLogps(
            policy_chosen=policy.chosen_logps,
            policy_rejected=policy.rejected_logps,
            chosen_lengths=policy.chosen_lengths,
            rejected_lengths=policy.rejected_lengths,
            reference_chosen=ref.chosen_logps if ref else None,
            reference_rejected=ref.rejected_logps if ref else None,
            score_chosen=batch.score_chosen,
            score_rejected=batch.score_rejected,
            policy_chosen_shared=policy.chosen_shared,
            policy_rejected_shared=policy.rejected_shared,
            reference_chosen_shared=ref.chosen_shared if ref else None,
            reference_rejected_shared=ref.rejected_shared if ref else None,
            chosen_log_sum_sq_probs=policy.chosen_log_sum_sq_probs,
            rejected_log_sum_sq_probs=policy.rejected_log_sum_sq_probs,
            policy_chosen_contrast=policy.chosen_contrast,
            reference_chosen_contrast=ref.chosen_contrast if ref else None,
        )
        out = self.loss(pair, train=model.training)
        mode = "train" if model.training else "eval"
        self._store(mode, out, batch)
        return (out.loss, {"per_pair": out.per_pair}) if return_outputs else out.loss

    def _reference(self, model, batch, positions) -> SequenceLogps | None:
        """The reference's sums for the batch (detached): from the precomputed cache (a cache written
        before LD-DPO's shared sums were kept has none), or a forward of the reference."""
        if not self.loss.needs_reference:
            return None
        if self.reference_logps is not None:
            values = {
                k: self.reference_logps[k][positions].to(self.args.device)
                for k in ("chosen", "rejected", "chosen_lengths", "rejected_lengths")
            }
            optional = [
                self.reference_logps[k][positions].to(self.args.device) if k in self.reference_logps else None
                for k in ("chosen_shared", "rejected_shared", "chosen_contrast")
            ]
            return SequenceLogps(
                values["chosen"],
                values["rejected"],
                values["chosen_lengths"],
                values["rejected_lengths"],
                optional[0],
                optional[1],
                chosen_contrast=optional[2],
            )
        with torch.no_grad():
            if self.reference_model is not None:
                result = self.adapter.sequence_logps(self.reference_model, batch)
            else:  # LoRA: the base model is the reference
                unwrapped = self.accelerator.unwrap_model(model)
                context = unwrapped.disable_adapter() if hasattr(unwrapped, "disable_adapter") else nullcontext()
                if self.reference_sync is not None:  # TR-DPO: the adapter's moving reference copy
                    context = self.reference_sync.swapped(unwrapped)
                with context:
                    result = self.adapter.sequence_logps(model, batch)
        return result

    # ---- metrics ------------------------------------------------------------------------------------

    def _store(self, mode: str, out, batch) -> None:
        values = torch.tensor(list(out.metrics.values()), device=self.args.device)
        # The mean over processes of per-process means: equal micro-batches make it the global mean.
        values = self.accelerator.gather_for_metrics(values.unsqueeze(0)).mean(0).tolist()
        for key, value in zip(out.metrics, values):
            self._stored[mode][key].append(value)
        self._stored[mode]["data/truncated_fraction"].append(batch.num_truncated / max(batch.num_pairs, 1))
        if mode == "train":
            for key in TRACKED_DETAILS:
                if key in out.details:
                    values = self.accelerator.gather_for_metrics(out.details[key].detach().float()).cpu().tolist()
                    self.pair_details[key].extend(values)
                    self.pair_details_steps[key].extend([self.state.global_step] * len(values))

    def _count_bad_records(self, batch: PairBatch) -> None:
        for error in batch.skipped:
            if self.collate_skips.add(error):
                logger.warning("skipping %s", error)
        self.truncated_records.update((i, r) for i, r, cut in zip(batch.indices, batch.ids, batch.truncated) if cut)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if "loss" in logs else "eval"
        prefix = "eval_" if mode == "eval" else ""
        for key, values in self._stored[mode].items():
            if values:
                logs[prefix + key] = sum(values) / len(values)
        self._stored[mode].clear()
        skipped = self.skipped_before_training + self.collate_skips.total
        if skipped:
            logs["data/skipped_records"] = float(skipped)
        super().log(logs, start_time)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        if self.reference_sync is not None:
            self.reference_sync.load(resume_from_checkpoint)
        saved = os.path.join(resume_from_checkpoint, PAIR_DETAILS)
        if os.path.isfile(saved):  # the per-pair weights of the steps before the checkpoint
            with open(saved, encoding="utf-8") as f:
                details = json.load(f)
            self.pair_details = defaultdict(list, details["values"])
            self.pair_details_steps = defaultdict(list, details["steps"])

    def _load_callback_state(self) -> None:
        """On resume: the loss's running state back from the checkpoint (whatever
        `restore_callback_states_from_checkpoint` says: the state is the objective's, not a callback's)."""
        super()._load_callback_state()
        states: Any = self.state.stateful_callbacks or {}  # a dict after a save (the Trainer types it loosely)
        saved = states.get(LossStateCallback.__name__)
        if isinstance(saved, dict) and saved.get("attributes", {}).get("saved"):
            self.loss.load_state_dict(saved["attributes"]["saved"])
        for callback in self.callback_handler.callbacks:  # a restored callback must point at our loss
            if isinstance(callback, LossStateCallback):
                callback.loss = self.loss

    # ---- checkpoints --------------------------------------------------------------------------------

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        super()._save(output_dir, state_dict)
        if self.run_config is not None:
            save_run_config(self.run_config, output_dir or str(self.args.output_dir))

    def _save_checkpoint(self, model, trial):
        """The Trainer's checkpoint, staged and renamed when complete (checkpoints.py), with TR-DPO's
        moving reference and the per-pair weights so far in it."""

        def save() -> None:
            super(PreferenceTrainer, self)._save_checkpoint(model, trial)
            if not self.args.should_save:
                return
            staging = os.path.join(self._get_output_dir(trial=trial), f"{STAGING_PREFIX}-{self.state.global_step}")
            if self.reference_sync is not None:
                self.reference_sync.save(staging)
            with open(os.path.join(staging, PAIR_DETAILS), "w", encoding="utf-8") as f:
                json.dump({"values": self.pair_details, "steps": self.pair_details_steps}, f)

        save_checkpoint_atomically(self, trial, save)
