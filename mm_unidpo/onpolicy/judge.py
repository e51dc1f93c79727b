"""`mm-unidpo judge samples.jsonl --judge KIND --out scored.jsonl`: score every sample.

    mm-unidpo judge samples.jsonl --judge objects --out scored.jsonl
    mm-unidpo judge samples.jsonl --judge mypkg.judges:my_scorer --out scored.jsonl
    mm-unidpo judge samples.jsonl --judge reward_model --model Skywork/Skywork-Reward-Llama-3.1-8B --out scored.jsonl
    mm-unidpo judge samples.jsonl --judge prm --model Qwen/Qwen2.5-Math-PRM-7B --trust-remote-code \\
        --judge-arg benchmark=gsm8k --out scored.jsonl
    mm-unidpo judge samples.jsonl --judge vlm --model llava-hf/llava-1.5-13b-hf --out scored.jsonl

Judges (`mm_unidpo.onpolicy.judges`): `rule` / `module.path:function` (a `fn(record, response) -> float`;
its module is imported only because it is named here), `objects`, `reward_model`, `prm`, `vlm`. Each
takes its options as `--judge-arg KEY=VALUE` (values read as YAML: 8, true, 0.5, text); `--model`,
`--batch-size`, `--device`, `--dtype` and `--trust-remote-code` go to judges that take them.

Every sample of every line gets a `score` (and the judge's details under `judge`); an empty sample is
not judged (`score: null`); a score that is not a finite float32 number is an error naming the record.
Images resolve in `--image-root` (default: the samples file's folder; a line's own root is never used)
and a path outside it is refused. Lines are written as each chunk of prompts is judged; rerunning continues
where it stopped, and a rerun with another judge or other options is refused (see `store.py`).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mm_unidpo.cli_args import HelpFormatter, positive_int
from mm_unidpo.errors import UsageError
from mm_unidpo.yaml_config import load_yaml

from .judges import Judge, judge_options, make_judge
from .records import line_digest, record_of, score_problem
from .store import Progress, ResumableLines, check_finished, check_out, chunks, lock_output, read_lines

logger = logging.getLogger(__name__)


def read_samples(path: str | Path, image_root: str | Path | None = None) -> list[tuple[dict[str, Any], Any]]:
    """(line, its prompt record) for every line of a finished samples file, images resolved in `image_root`
    (default: the file's folder); a bad line is an error naming it."""
    check_finished(path, "generate")
    root = Path(path).resolve().parent if image_root is None else Path(image_root)
    if not root.is_dir():
        raise FileNotFoundError(f"image root {root} is not a directory")
    out: list[tuple[dict[str, Any], Any]] = []
    seen: dict[Any, int] = {}
    for number, line in read_lines(path):
        where = f"{path}, line {number}"
        record = record_of(line, where, root)
        if record.index in seen:
            raise ValueError(f"{where}: index {record.index} again (first on line {seen[record.index]})")
        seen[record.index] = number
        out.append((line, record))
    return out


def check_judgements(judgements: Sequence[Any], items: Sequence[tuple[Any, str]], where: str) -> None:
    if len(judgements) != len(items):
        raise ValueError(f"{where}: the judge returned {len(judgements)} judgements for {len(items)} samples")
    for (record, _), judgement in zip(items, judgements):
        score = judgement.get("score") if isinstance(judgement, dict) else None
        problem = score_problem(score)
        if problem:
            raise ValueError(f"{where}: {record.where()}: the judge gave {score!r}, {problem}")


def judge_samples(
    samples: str | Path | list[tuple[dict[str, Any], Any]],
    judge: Judge,
    out: str | Path,
    *,
    settings: dict[str, Any] | None = None,
    chunk_size: int = 16,
    overwrite: bool = False,
    progress: bool | None = None,
    desc: str = "judge",
    source: Any = None,
) -> list[dict[str, Any]]:
    """Score the samples of every line into `out`; returns the scored lines in input order."""
    if isinstance(samples, (str, Path)):
        source, samples = samples, read_samples(samples)
    by_index = {record.index: (line, record) for line, record in samples}
    store = ResumableLines(
        out,
        settings or {},
        inputs={i: line_digest(line) for i, (line, _) in by_index.items()},
        source=source,
        overwrite=overwrite,
    )
    order = list(by_index)
    todo = [batch for batch in chunks(order, chunk_size) if any(i not in store.done for i in batch)]
    with Progress(
        len(order), len(order) - sum(i not in store.done for b in todo for i in b), desc, "prompt", progress
    ) as bar:
        for batch in todo:
            items = [(by_index[i][1], s["text"]) for i in batch for s in by_index[i][0]["samples"] if s["text"].strip()]
            try:
                results = judge(items) if items else []
            except Exception as error:
                records = [by_index[i][1] for i in batch]
                names = ", ".join(r.where() for r in records[:3]) + (", ..." if len(records) > 3 else "")
                raise RuntimeError(
                    f"{out}: the judge failed on {names}: {type(error).__name__}: {error}"
                    + ("" if len(records) == 1 else " (--chunk-size 1 names the record exactly)")
                ) from error
            check_judgements(results, items, str(out))
            judgements = iter(results)
            lines = []
            for i in batch:
                line = by_index[i][0]
                scored = []
                for sample in line["samples"]:
                    if not sample["text"].strip():
                        scored.append({**sample, "score": None})
                        continue
                    judgement = dict(next(judgements))
                    scored.append({**sample, "score": float(judgement.pop("score")), "judge": judgement})
                if i not in store.done:
                    lines.append({**line, "samples": scored})
            store.append(lines)
            bar.update(len(lines))
    return store.finish(order)


def judged_means(lines: list[dict[str, Any]], prefix: str = "") -> dict[str, float]:
    """The mean score of the judged samples and of every numeric (or true/false) judge detail."""
    values: dict[str, list[float]] = {"score": []}
    for line in lines:
        for sample in line["samples"]:
            if sample.get("score") is None:
                continue
            values["score"].append(float(sample["score"]))
            for key, value in (sample.get("judge") or {}).items():
                if isinstance(value, (bool, int, float)):
                    values.setdefault(key, []).append(float(value))
    return {f"{prefix}{'mean_score' if k == 'score' else k}": sum(v) / len(v) for k, v in values.items() if v}


def _value(text: str) -> Any:
    value = load_yaml(text)
    return text if value is None else value


def judge_from_args(args: argparse.Namespace) -> tuple[Judge, dict[str, Any]]:
    """The judge and the settings that identify it, from the command line."""
    options: dict[str, Any] = {}
    for item in args.judge_arg:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--judge-arg {item!r} must look like KEY=VALUE")
        options[key] = _value(value)
    takes = judge_options(args.judge)
    for name in ("model", "batch_size", "device", "dtype", "trust_remote_code"):
        value = getattr(args, name)
        if value in (None, False):
            continue
        if name not in takes:
            raise UsageError(f"judge {args.judge!r} takes no --{name.replace('_', '-')} (it takes {takes})")
        options.setdefault(name, value)
    settings = {"judge": args.judge, **{k: v for k, v in options.items() if k not in ("device", "batch_size")}}
    return make_judge(args.judge, **options), settings


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mm-unidpo judge", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("samples", help="samples from mm-unidpo generate (JSON lines)")
    p.add_argument("--judge", required=True, help="rule | objects | reward_model | prm | vlm | module.path:function")
    p.add_argument("--out", required=True, help="output JSON-lines file")
    p.add_argument("--judge-arg", action="append", default=[], metavar="KEY=VALUE", help="a judge option (repeatable)")
    p.add_argument("--model", help="the judge model (reward_model, prm, vlm)")
    p.add_argument("--batch-size", type=positive_int, help="the judge model's batch size")
    p.add_argument("--device", help="judge-model device (default: cuda if available)")
    p.add_argument("--dtype", help="judge-model dtype (bfloat16, float16, float32)")
    p.add_argument("--trust-remote-code", action="store_true", help="run the judge checkpoint's own code")
    p.add_argument("--chunk-size", type=positive_int, default=16, help="prompts judged per write")
    p.add_argument("--image-root", help="where the samples' image paths resolve (default: the samples file's folder)")
    p.add_argument("--overwrite", action="store_true", help="discard scores already in --out")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_out(args.out, args.samples)
    lock_output(args.out)  # before a judge model loads: a second process on --out fails now
    samples = read_samples(args.samples, args.image_root)  # the input first: a bad line fails before model loading
    judge, settings = judge_from_args(args)
    settings["image_root"] = str(Path(args.image_root or Path(args.samples).parent).resolve())
    lines = judge_samples(
        samples,
        judge,
        args.out,
        settings=settings,
        chunk_size=args.chunk_size,
        overwrite=args.overwrite,
        source=args.samples,
    )
    scores = [s["score"] for line in lines for s in line["samples"] if s["score"] is not None]
    empty = sum(s["score"] is None for line in lines for s in line["samples"])
    mean = sum(scores) / len(scores) if scores else float("nan")
    print(
        f"judged {len(scores)} samples of {len(lines)} prompts (mean score {mean:.3f}; {empty} empty, not judged)"
        f" -> {args.out}"
    )
    return 0
