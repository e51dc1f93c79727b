"""Response scorers, and `mm-unidpo score DATA --out FILE`: fill `score_chosen` / `score_rejected` of
preference data. The same scorers back the `rule` and `reward_model` judges of `mm-unidpo judge`.

Uni-DPO's quality weight σ(η (S_w − S_l)) and its τ_good gate need a score per response; data such as
RLAIF-V ships without them. Two kinds of scorer:

    mm-unidpo score data/pairs.jsonl --out data/pairs_scored.jsonl --scorer mypkg.judges:my_scorer
    mm-unidpo score data/pairs.jsonl --out data/pairs_scored.jsonl --model Skywork/Skywork-Reward-Llama-3.1-8B

* `--scorer module.path:function` — a rule-based function `fn(record, response) -> float` (record: the
  `PreferenceRecord`, response: the chosen or the rejected text). With `--scorer-arg KEY=VALUE` the named
  callable is a factory: it is called with those arguments and must return such a function. Built in:
  `object_overlap` (see `object_overlap`).
* `--model PATH_OR_HUB_ID` (or `--reward-model`) — an `AutoModelForSequenceClassification` with one output, scoring
  the prompt and response as rendered by its tokenizer's chat template, in batches (`--batch-size`); the
  two responses of a pair share one prefill of their prompt (`shared_prompt.py`).
  A text reward model does NOT see the images: its scores judge the text alone, which misses visual
  hallucinations — prefer a rule-based judge with ground truth, or a multimodal judge, for those.

Existing scores are kept (only missing ones are filled) unless `--overwrite`. Reads anything
`load_preference_data` reads; writes our `unidpo` JSON lines with `save_preference_data`.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import json
import logging
import math
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mm_unidpo.cli_args import HelpFormatter, positive_int
from mm_unidpo.data import load_preference_data, save_preference_data
from mm_unidpo.data.records import IMAGE_PLACEHOLDER, Message, PreferenceRecord
from mm_unidpo.model_source import check_model_source

logger = logging.getLogger(__name__)

Scorer = Callable[[PreferenceRecord, str], float]


# ---- the built-in rule-based judge ---------------------------------------------------------------


def object_overlap(objects: str, scale: float = 10.0) -> Scorer:
    """Factory: an object-hallucination judge from ground-truth object lists (CHAIR-like, simplified).

    `objects` is a JSON file {record id: ["dog", "frisbee", ...], ...}. The vocabulary is every object
    named anywhere in that file (plus an optional "__vocabulary__" list). A response *mentions* an object
    when the object's words appear in it as whole words (a trailing "s" / "es" allowed). Its score is
    the F1 of the mentioned objects against the record's ground truth, times `scale` (default 0-10,
    the scale of the official multimodal tau_good = 2.5): naming true objects raises it, naming objects
    that are not in the image (hallucinations) lowers it.

        mm-unidpo score pairs.jsonl --out scored.jsonl --scorer object_overlap --scorer-arg objects=objs.json
    """
    try:
        with open(objects, encoding="utf-8") as f:
            table: dict[str, list[str]] = json.load(f)
    except json.JSONDecodeError as error:
        raise ValueError(f"object_overlap: {objects} is not JSON: {error}") from None
    if not isinstance(table, dict) or not all(isinstance(v, list) for v in table.values()):
        raise ValueError(f"object_overlap: {objects} must map record ids to lists of object names")
    scale = float(scale)
    truth = {key: {_normalise(o) for o in value} for key, value in table.items() if key != "__vocabulary__"}
    vocabulary = set().union(*truth.values(), {_normalise(o) for o in table.get("__vocabulary__", [])})
    patterns = {o: re.compile(r"\b" + r"\s+".join(map(re.escape, o.split())) + r"(?:e?s)?\b") for o in vocabulary}

    def score(record: PreferenceRecord, response: str) -> float:
        if record.id not in truth:
            raise KeyError(f"{record.where()}: no ground-truth objects for id {record.id!r} in {objects}")
        expected = truth[record.id]
        text = response.lower()
        mentioned = {o for o, pattern in patterns.items() if pattern.search(text)}
        correct = len(mentioned & expected)
        if not correct:
            return 0.0
        precision, recall = correct / len(mentioned), correct / len(expected)
        return scale * 2 * precision * recall / (precision + recall)

    return score


def _normalise(name: str) -> str:
    return " ".join(name.lower().split())


BUILTIN_SCORERS: dict[str, Callable[..., Any]] = {"object_overlap": object_overlap}


def import_callable(spec: str, flag: str) -> Any:
    """The object `spec` names: "module.path:name" (a module importable from the current directory or the
    installed packages) or "path/to/file.py:name". Only what the command line names is imported."""
    module_name, _, attr = spec.rpartition(":")
    try:
        if module_name.endswith(".py") or os.sep in module_name:
            path = Path(module_name).expanduser()
            if not path.is_file():
                raise ValueError(f"{flag} {spec!r}: no file {str(path)!r}")
            loader_spec = importlib.util.spec_from_file_location(path.stem, path)
            if loader_spec is None or loader_spec.loader is None:
                raise ValueError(f"{flag} {spec!r}: {str(path)!r} is not a Python file")
            module = importlib.util.module_from_spec(loader_spec)
            loader_spec.loader.exec_module(module)
        else:
            if os.getcwd() not in sys.path and "" not in sys.path:  # `mm-unidpo` (a script) does not add it
                sys.path.insert(0, os.getcwd())
            module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise ValueError(
            f"{flag} {spec!r}: cannot import {error.name!r} (looked in the current directory "
            f"{os.getcwd()!r} and the installed packages; or give path/to/file.py:{attr})"
        ) from None
    target = getattr(module, attr, None)
    if target is None:
        raise ValueError(f"{flag} {spec!r}: {module_name!r} has no {attr!r}")
    return target


def resolve_scorer(spec: str, kwargs: dict[str, str] | None = None) -> Scorer:
    """A scorer from a built-in name or "module.path:function" (a factory when `kwargs` are given)."""
    target: Any
    if spec in BUILTIN_SCORERS:
        target = BUILTIN_SCORERS[spec]
    else:
        if ":" not in spec:
            raise ValueError(f"--scorer {spec!r}: give module.path:function or one of {sorted(BUILTIN_SCORERS)}")
        target = import_callable(spec, "--scorer")
    # A built-in factory is always called (with or without arguments); a user function only when given arguments.
    if kwargs or spec in BUILTIN_SCORERS:
        needed = [
            n
            for n, p in inspect.signature(target).parameters.items()
            if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        missing = [n for n in needed if n not in (kwargs or {})]
        if missing:
            raise ValueError(
                f"--scorer {spec!r} needs "
                + ", ".join(f"--scorer-arg {n}=..." for n in missing)
                + f" (it takes {', '.join(inspect.signature(target).parameters)})"
            )
        target = target(**(kwargs or {}))
    if not callable(target):
        raise ValueError(f"--scorer {spec!r} did not give a callable scorer")
    return target


# ---- reward model --------------------------------------------------------------------------------


def text_messages(record: PreferenceRecord, response: str) -> list[Message]:
    """The pair's prompt as text-only chat messages plus the response as the assistant turn
    (image placeholders and image parts removed: a text reward model cannot see them)."""
    messages = [{"role": "user", "content": record.prompt}] if isinstance(record.prompt, str) else record.prompt
    out = []
    for message in messages:
        content = message["content"]
        if not isinstance(content, str):
            content = "".join(part["text"] for part in content if part.get("type") == "text")
        out.append({"role": message["role"], "content": content.replace(IMAGE_PLACEHOLDER, "").strip()})
    return [*out, {"role": "assistant", "content": response}]


class RewardModelScorer:
    """Batched scoring with a sequence-classification reward model (one output: the reward)."""

    def __init__(
        self,
        name_or_path: str,
        *,
        batch_size: int = 8,
        max_length: int = 4096,
        device: str | None = None,
        dtype: str | None = None,
        trust_remote_code: bool = False,
    ):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = dtype or ("bfloat16" if self.device.startswith("cuda") else "float32")
        check_model_source(name_or_path)  # a wrong local path says so, not "Repo id must be ..."
        self.tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
        self.model = (
            AutoModelForSequenceClassification.from_pretrained(
                name_or_path, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code
            )
            .to(self.device)
            .eval()
        )
        if self.model.config.num_labels != 1:
            raise ValueError(
                f"{name_or_path} has {self.model.config.num_labels} outputs; a reward model for "
                f"--model must have exactly one (num_labels=1)"
            )
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # Sequence classifiers read the last non-pad token: they must know the pad id.
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.batch_size, self.max_length = batch_size, max_length
        self._warned_images = self._warned_fallback = False

    def render(self, record: PreferenceRecord, response: str) -> str:
        messages = text_messages(record, response)
        if self.tokenizer.chat_template:
            return str(self.tokenizer.apply_chat_template(messages, tokenize=False))
        return "\n\n".join(m["content"] for m in messages)  # no template: plain prompt, then response

    def score_all(self, items: list[tuple[PreferenceRecord, str]]) -> list[float]:
        """One score per (record, response): the responses to one prompt from one prefill of their
        common start (`shared_prompt.py`); one forward each where the model takes no past cache."""
        from .shared_prompt import cache_argument, shared_prefix_forwards  # lazy: torch; score runs without

        self._warn_images(items)
        if cache_argument(self.model) is None:
            if not self._warned_fallback:
                self._warned_fallback = True
                logger.info("%s takes no past cache: one forward per response", type(self.model).__name__)
            return self.score_one_by_one(items)
        texts = [self.render(record, response) for record, response in items]
        ids = self.tokenizer(
            texts, truncation=True, max_length=self.max_length, add_special_tokens=not self.tokenizer.chat_template
        )["input_ids"]
        pad = self.model.config.pad_token_id
        # The classifier reads its last non-pad token (either padding side): the prefix must end before it.
        last = [max((k for k, token in enumerate(row) if token != pad), default=0) for row in ids]
        keys = [repr(record.prompt) for record, _ in items]
        scores = [0.0] * len(items)
        # Padded on the tokenizer's side, as one forward per response pads: a head reading the last
        # position (some remote-code reward models) reads the same token on both paths.
        side = self.tokenizer.padding_side
        for rows, _, out in shared_prefix_forwards(self.model, ids, keys, last, pad, self.batch_size, side):
            for i, value in zip(rows, out.logits[:, 0].float().cpu().tolist()):
                scores[i] = value
        return scores

    def score_one_by_one(self, items: list[tuple[PreferenceRecord, str]]) -> list[float]:
        """One score per (record, response), one forward each (in padded batches): the reference path."""
        import torch

        self._warn_images(items)
        texts = [self.render(record, response) for record, response in items]
        # Longest first, so padding is small within a batch and an out-of-memory shows up at once.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        scores = [0.0] * len(texts)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            # The chat template already wrote the special tokens (BOS included).
            batch = self.tokenizer(
                [texts[i] for i in chunk],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=self.max_length,
                add_special_tokens=not self.tokenizer.chat_template,
            )
            with torch.no_grad():
                logits = self.model(**batch.to(self.device)).logits[:, 0].float().cpu().tolist()
            for i, value in zip(chunk, logits):
                scores[i] = value
        return scores

    def _warn_images(self, items: list[tuple[PreferenceRecord, str]]) -> None:
        if not self._warned_images and any(record.images for record, _ in items):
            self._warned_images = True
            logger.warning("the reward model is text-only: images are not seen, scores judge the text alone")


# ---- filling -------------------------------------------------------------------------------------


def fill_scores(
    records: list[PreferenceRecord],
    score_fn: Callable[[list[tuple[PreferenceRecord, str]]], list[float]],
    overwrite: bool = False,
) -> dict[str, int]:
    """Set both scores of every record that lacks them (or of all with `overwrite`); in place.

    `score_fn` scores a list of (record, response) and returns one float each. Returns counts.
    """
    todo = [r for r in records if overwrite or r.score_chosen is None or r.score_rejected is None]
    items = [(r, text) for r in todo for text in (r.chosen, r.rejected)]
    scores = score_fn(items) if items else []
    for i, record in enumerate(todo):
        chosen, rejected = float(scores[2 * i]), float(scores[2 * i + 1])
        if not (math.isfinite(chosen) and math.isfinite(rejected)):
            raise ValueError(f"{record.where()}: scorer returned a non-finite score ({chosen}, {rejected})")
        record.score_chosen, record.score_rejected = chosen, rejected
    return {"scored": len(todo), "kept": len(records) - len(todo)}


def _scorer_kwargs(items: list[str]) -> dict[str, str]:
    kwargs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--scorer-arg {item!r} must look like KEY=VALUE")
        kwargs[key] = value
    return kwargs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mm-unidpo score", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("data", help="preference data: a file, saved dataset or hub id")
    parser.add_argument("--out", required=True, help="output JSON-lines file (our unidpo format)")
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument("--scorer", help="module.path:function, or a built-in: " + ", ".join(BUILTIN_SCORERS))
    how.add_argument(
        "--model",
        "--reward-model",
        dest="reward_model",
        help="AutoModelForSequenceClassification reward model (hub id or path)",
    )
    parser.add_argument(
        "--scorer-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="arguments for a scorer factory (repeatable)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing scores (default: fill missing)")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="reward-model batch size")
    parser.add_argument("--max-length", type=positive_int, default=4096, help="reward-model input tokens (truncated)")
    parser.add_argument("--device", help="reward-model device (default: cuda if available)")
    parser.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), help="reward-model dtype")
    parser.add_argument("--trust-remote-code", action="store_true")
    parser.add_argument("--format", help="input format (default: detected)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--image-root", help="where relative image paths resolve (input and output)")
    parser.add_argument("--on-bad-record", choices=("error", "skip"), default="error")
    parser.add_argument("--limit", type=int)
    args = parser.parse_args(argv)
    if args.scorer:
        scorer = resolve_scorer(args.scorer, _scorer_kwargs(args.scorer_arg))
        score_fn = lambda items: [scorer(record, text) for record, text in items]  # noqa: E731
    else:
        score_fn = RewardModelScorer(
            args.reward_model,
            batch_size=args.batch_size,
            max_length=args.max_length,
            device=args.device,
            dtype=args.dtype,
            trust_remote_code=args.trust_remote_code,
        ).score_all
    data = load_preference_data(
        args.data,
        format=args.format,
        split=args.split,
        image_root=args.image_root,
        on_bad_record=args.on_bad_record,
        limit=args.limit,
    )
    counts = fill_scores(data.records, score_fn, overwrite=args.overwrite)
    root = args.image_root or (data.records[0].image_root if data.records else None)
    out = save_preference_data(data.records, args.out, image_root=root)
    if root and Path(root).resolve() != out.resolve().parent:
        print(f"note: image paths in {out} are relative to {root}: train with data.image_root: {root}")
    print(f"scored {counts['scored']} pairs, kept the scores of {counts['kept']} -> {out}")
    return 0
