"""`mm-unidpo generate DATA --model M --n 8 --out samples.jsonl`: sample responses from the policy.

    mm-unidpo generate prompts.jsonl --model llava-hf/llava-1.5-7b-hf --n 8 --temperature 1.0 --out samples.jsonl
    mm-unidpo generate prompts.jsonl --model Qwen/Qwen2-VL-7B-Instruct --backend vllm --n 8 --out samples.jsonl

DATA is anything `load_preference_data` reads, or a prompts-only file (rows with `prompt`, optional
`images` and `id`; see `mm_unidpo.onpolicy.records`). Prompts are rendered by the model family's adapter
(the chat template, as in training) and continued in batches (`--batch-size` prompts, `--n` rows each):

* `--backend hf` (default): the adapter's left-padded `generate` (every VLM family and causal LMs, CPU or
  GPU), each prompt prefilled once and its KV cache repeated to the n samples (`sampling.py`). Each
  batch is seeded (`--seed` + the position of its first prompt): the same command gives the same
  samples, and a resumed run redoes an unfinished batch exactly.
* `--backend vllm` (when vllm is installed): the same rendered prompts with their images
  (`multi_modal_data`), one seed per request; a `--adapter` is served as a LoRA request.

Sampling is plain: temperature and top-p only (no top-k). `--logprobs` keeps each sample's token ids and
the log-probability of every sampled token under the model (raw logits, before temperature); with the hf
backend this keeps every step's logits in memory while a batch runs (lower `--batch-size` for long outputs).

Output: one line per prompt, written as each batch finishes; rerunning the command continues where it
stopped (see `mm_unidpo.onpolicy.store`). The backends are in `samplers.py`.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mm_unidpo.cli_args import HelpFormatter, non_negative_float, positive_int, unit_interval
from mm_unidpo.model_source import check_model_source

from .records import PromptRecord, check_prompts, load_prompts, prompt_digest, prompt_line
from .samplers import GenerateConfig, load_sampler
from .store import Progress, ResumableLines, check_out, chunks, lock_output

logger = logging.getLogger(__name__)

# ---- the resumable loop -----------------------------------------------------------------------------


def generate_samples(
    records: Sequence[PromptRecord],
    sampler: Any,
    config: GenerateConfig,
    out: str | Path,
    *,
    model_id: str = "",
    overwrite: bool = False,
    progress: bool | None = None,
    desc: str = "generate",
    settings: dict[str, Any] | None = None,
    source: Any = None,
) -> list[dict[str, Any]]:
    """Sample `config.n` responses per prompt into `out` (one line each); returns the lines in input order.

    Prompts are batched longest first (less padding); the batches are fixed over the whole input and
    seeded by position, so an interrupted run resumed with the same command writes the same lines.
    `settings`: what else shapes the samples (family, backend, dtype, image root), kept with `model_id`
    and `config` beside the output; `source`: the prompts file (see `store.ResumableLines`)."""
    by_index: dict[int, PromptRecord] = {r.index: r for r in records if r.index is not None}
    if len(by_index) != len(records):
        raise ValueError("prompt records must have distinct indices")
    store = ResumableLines(
        out,
        {"model": model_id, **asdict(config), **(settings or {})},
        inputs={i: prompt_digest(r) for i, r in by_index.items()},
        source=source,
        overwrite=overwrite,
    )
    lengths = {i: len(sampler.render(r)) for i, r in by_index.items()}
    order = sorted(by_index, key=lambda i: -lengths[i])
    position = {index: k for k, index in enumerate(order)}
    todo = [batch for batch in chunks(order, config.batch_size) if any(i not in store.done for i in batch)]
    if len(store.done):
        logger.info("%s: %d of %d prompts already done", out, len(store.done), len(records))
    with Progress(
        len(records), len(records) - sum(i not in store.done for b in todo for i in b), desc, "prompt", progress
    ) as bar:
        for batch in todo:
            batch_records = [by_index[i] for i in batch]
            samples = sampler.sample(batch_records, [config.seed + position[i] for i in batch])
            lines = [
                {**prompt_line(r), "samples": s} for r, s in zip(batch_records, samples) if r.index not in store.done
            ]
            store.append(lines)
            bar.update(len(lines))
    return store.finish(list(by_index))


def build_parser() -> argparse.ArgumentParser:
    d = GenerateConfig()
    p = argparse.ArgumentParser(prog="mm-unidpo generate", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("data", help="prompts: preference data or a prompts-only file (file, saved dataset, hub id)")
    p.add_argument("--model", required=True, help="policy model (hub id or path)")
    p.add_argument("--adapter", help="LoRA adapter folder on top of --model")
    p.add_argument("--family", help="model family (default: detected from the checkpoint)")
    p.add_argument("--out", required=True, help="output JSON-lines file (one line per prompt)")
    p.add_argument("--n", type=positive_int, default=d.n, help="samples per prompt")
    p.add_argument("--temperature", type=non_negative_float, default=d.temperature, help="0 = greedy (needs --n 1)")
    p.add_argument("--top-p", type=unit_interval, default=d.top_p)
    p.add_argument("--max-new-tokens", type=positive_int, default=d.max_new_tokens)
    p.add_argument(
        "--batch-size", type=positive_int, default=d.batch_size, help="prompts per generate call (n rows each)"
    )
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--logprobs", action="store_true", help="keep token ids and per-token log-probs")
    p.add_argument("--backend", choices=("hf", "vllm"), default="hf")
    p.add_argument(
        "--dtype", default="auto", help="auto (the checkpoint's on a GPU, float32 on CPU), bfloat16, float16 or float32"
    )
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--format", help="input format: a preference format, 'prompts', or detected (default)")
    p.add_argument("--split", default="train")
    p.add_argument("--image-root", help="where relative image paths resolve (default: the data file's folder)")
    p.add_argument("--on-bad-record", choices=("error", "skip"), default="error")
    p.add_argument("--limit", type=positive_int, help="first N prompts")
    p.add_argument("--overwrite", action="store_true", help="discard samples already in --out")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = GenerateConfig(
        n=args.n,
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        seed=args.seed,
        logprobs=args.logprobs,
    )
    check_out(args.out, args.data)
    lock_output(args.out)  # before minutes of model loading: a second process on --out fails now
    check_model_source(args.model)  # a typo fails before torch is imported
    # Data first: a bad record should fail before minutes of model loading.
    data = load_prompts(
        args.data,
        format=args.format,
        split=args.split,
        image_root=args.image_root,
        on_bad_record=args.on_bad_record,
        limit=args.limit,
        decode=True,
    )
    if not data.records:
        raise ValueError(f"{args.data}: no prompts to sample from ({data.skips.summary()})")
    sampler = load_sampler(
        args.model,
        config,
        backend=args.backend,
        adapter=args.adapter,
        family=args.family,
        dtype=args.dtype,
        trust_remote_code=args.trust_remote_code,
    )
    data = check_prompts(data, sampler, config, args.on_bad_record)
    if not data.records:
        raise ValueError(f"{args.data}: no prompts to sample from ({data.skips.summary()})")
    lines = generate_samples(
        data.records,
        sampler,
        config,
        args.out,
        overwrite=args.overwrite,
        model_id=f"{args.model}+{args.adapter}" if args.adapter else args.model,
        settings={
            "family": getattr(getattr(sampler, "adapter", None), "family", args.family),
            "backend": args.backend,
            "dtype": args.dtype,
            "image_root": data.records[0].image_root,
        },
        source=args.data,
    )
    samples = sum(len(line["samples"]) for line in lines)
    empty = sum(not s["text"] for line in lines for s in line["samples"])
    print(
        f"{samples} samples for {len(lines)} prompts ({empty} empty"
        + (f"; {data.skips.summary()}" if data.skips.total else "")
        + f") -> {args.out}"
    )
    return 0
