"""`mm-unidpo pairs scored.jsonl --out pairs.jsonl`: preference pairs from judged samples.

    mm-unidpo pairs scored.jsonl --out pairs.jsonl                                  # best vs worst per prompt
    mm-unidpo pairs scored.jsonl --out pairs.jsonl --strategy k --k 2 --min-gap 1.0
    mm-unidpo pairs scored.jsonl --out pairs.jsonl --strategy all --min-gap 2.5 --length-balance

Per prompt, the non-empty judged samples (a text repeated among them counts once) give candidate pairs
(higher score chosen) whose score gap is > 0 and ≥ `--min-gap`, optionally only those whose word counts
are within `--max-length-ratio` of each other, or (`--require-correct`, with a judge that grades answers,
e.g. `prm` with a benchmark) whose chosen is correct and rejected incorrect. Candidates are ranked by gap
(largest first), then — with `--length-balance` — by how close the two lengths are, then by sample order.

* `best-worst` (default): the top candidate: the best sample against the worst (RLAIF-V, the demo).
* `k`: up to `--k` pairs, top candidates first, each sample in at most one pair.
* `all`: every candidate.

Pairs are written in our format (`unidpo`, with `score_chosen` / `score_rejected`; images relative to the
samples' image root), readable by `load_preference_data` and `mm-unidpo train`. Prompts that give no pair
are counted by why (fewer than two distinct samples, every sample scored the same, no gap large enough,
filtered), as are tied sample pairs; the counts and plots (sample scores, gaps, lengths of chosen vs
rejected) go to `<out>.summary.json` and `<out>.summary.png`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mm_unidpo.cli_args import HelpFormatter, non_negative_float, positive_int
from mm_unidpo.data import PreferenceRecord, save_preference_data
from mm_unidpo.errors import UsageError

from .records import PromptRecord, record_of, score_problem
from .store import check_finished, check_out, read_lines

STRATEGIES = ("best-worst", "k", "all")


@dataclass
class PairConfig:
    strategy: str = "best-worst"
    k: int = 1  # pairs per prompt for the "k" strategy
    min_gap: float = 0.0
    length_balance: bool = False
    max_length_ratio: float | None = None
    require_correct: bool = False

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown pairing strategy {self.strategy!r}; expected one of {STRATEGIES}")
        if self.k < 1 or self.min_gap < 0:
            raise ValueError("k must be >= 1 and min_gap >= 0")
        if self.max_length_ratio is not None and self.max_length_ratio < 1:
            raise ValueError(f"max_length_ratio must be >= 1, got {self.max_length_ratio}")


@dataclass
class PairStats:
    prompts: int = 0
    samples: int = 0
    empty_samples: int = 0  # not judged (an empty text cannot be a response)
    duplicate_samples: int = 0  # the same text again within a prompt
    pairs: int = 0
    prompts_with_pairs: int = 0
    prompts_too_few: int = 0  # fewer than two distinct judged samples
    prompts_all_tied: int = 0  # every sample scored the same
    prompts_below_gap: int = 0  # scores differ, but by less than min_gap
    prompts_filtered: int = 0  # gaps large enough, but removed by the length / correctness filters
    tied_pairs: int = 0  # distinct samples of one prompt with equal scores
    sample_scores: list[float] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    chosen_scores: list[float] = field(default_factory=list)
    rejected_scores: list[float] = field(default_factory=list)
    chosen_lengths: list[int] = field(default_factory=list)
    rejected_lengths: list[int] = field(default_factory=list)

    @property
    def prompts_without_pairs(self) -> int:
        return self.prompts - self.prompts_with_pairs

    def summary(self) -> dict[str, Any]:
        def mean(values: Sequence[float]) -> float | None:
            return sum(values) / len(values) if values else None

        out = {k: v for k, v in asdict(self).items() if not isinstance(v, list)}
        out.update(
            prompts_without_pairs=self.prompts_without_pairs,
            mean_sample_score=mean(self.sample_scores),
            mean_chosen_score=mean(self.chosen_scores),
            mean_rejected_score=mean(self.rejected_scores),
            mean_gap=mean(self.gaps),
            mean_chosen_words=mean(self.chosen_lengths),
            mean_rejected_words=mean(self.rejected_lengths),
        )
        return out


def _words(text: str) -> int:
    return len(text.split())


def _candidates(
    samples: list[tuple[int, dict[str, Any]]], config: PairConfig, stats: PairStats
) -> tuple[list[tuple[int, int]], str | None]:
    """Ranked (chosen, rejected) sample positions, and why there are none (a PairStats counter name)."""
    if len(samples) < 2:
        return [], "prompts_too_few"
    if len({s["score"] for _, s in samples}) == 1:
        stats.tied_pairs += len(samples) * (len(samples) - 1) // 2
        return [], "prompts_all_tied"
    ranked, gapped = [], 0
    for a, (i, s) in enumerate(samples):
        for j, t in samples[a + 1 :]:
            if s["score"] == t["score"]:
                stats.tied_pairs += 1
                continue
            (w, x), (lo, y) = ((i, s), (j, t)) if s["score"] > t["score"] else ((j, t), (i, s))
            gap = x["score"] - y["score"]
            if gap < config.min_gap:
                continue
            gapped += 1
            lw, ll = _words(x["text"]), _words(y["text"])
            if config.max_length_ratio is not None and max(lw, ll) > config.max_length_ratio * max(min(lw, ll), 1):
                continue
            correct = (x.get("judge") or {}).get("correct"), (y.get("judge") or {}).get("correct")
            if config.require_correct and correct != (True, False):
                continue
            balance = abs(lw - ll) if config.length_balance else 0
            ranked.append((-gap, balance, w, lo))
    ranked.sort()
    if not ranked:
        return [], "prompts_filtered" if gapped else "prompts_below_gap"
    return [(w, lo) for *_, w, lo in ranked], None


def _select(candidates: list[tuple[int, int]], config: PairConfig) -> list[tuple[int, int]]:
    if config.strategy == "all":
        return candidates
    limit = 1 if config.strategy == "best-worst" else config.k
    chosen: list[tuple[int, int]] = []
    used: set[int] = set()
    for w, lo in candidates:
        if w in used or lo in used:
            continue
        chosen.append((w, lo))
        used.update((w, lo))
        if len(chosen) == limit:
            break
    return chosen


def build_pairs(
    lines: list[tuple[dict[str, Any], PromptRecord]], config: PairConfig | None = None
) -> tuple[list[PreferenceRecord], PairStats]:
    """Pairs (as preference records, in input order) and the counts of the module doc."""
    config = config or PairConfig()
    stats = PairStats()
    records: list[PreferenceRecord] = []
    for line, record in lines:
        stats.prompts += 1
        samples, seen = [], set()
        for k, sample in enumerate(line["samples"]):
            stats.samples += 1
            if not sample["text"].strip() or sample.get("score") is None:
                stats.empty_samples += 1
                continue
            key = sample["text"].strip()
            if key in seen:
                stats.duplicate_samples += 1
                continue
            seen.add(key)
            samples.append((k, sample))
            stats.sample_scores.append(float(sample["score"]))
        candidates, reason = _candidates(samples, config, stats)
        if reason:
            setattr(stats, reason, getattr(stats, reason) + 1)
            continue
        by_position = dict(samples)
        selected = _select(candidates, config)
        stats.prompts_with_pairs += 1
        for w, lo in selected:
            chosen, rejected = by_position[w], by_position[lo]
            name = record.id if record.id is not None else str(record.index)
            records.append(
                PreferenceRecord(
                    record.prompt,
                    chosen["text"],
                    rejected["text"],
                    images=list(record.images),
                    score_chosen=float(chosen["score"]),
                    score_rejected=float(rejected["score"]),
                    id=f"{name}-{w}-{lo}",
                    index=len(records),
                    image_root=record.image_root,
                )
            )
            stats.gaps.append(float(chosen["score"]) - float(rejected["score"]))
            stats.chosen_scores.append(float(chosen["score"]))
            stats.rejected_scores.append(float(rejected["score"]))
            stats.chosen_lengths.append(_words(chosen["text"]))
            stats.rejected_lengths.append(_words(rejected["text"]))
    stats.pairs = len(records)
    return records, stats


def read_scored(path: str | Path, image_root: str | Path | None = None) -> list[tuple[dict[str, Any], PromptRecord]]:
    """(line, prompt record) of a finished judged samples file, images resolved in `image_root` (default: the
    file's folder; a path outside it is refused); every sample must carry a finite float32 score (or null)."""
    check_finished(path, "judge")
    root = Path(path).resolve().parent if image_root is None else Path(image_root)
    if not root.is_dir():
        raise FileNotFoundError(f"image root {root} is not a directory")
    out = []
    for number, line in read_lines(path):
        where = f"{path}, line {number}"
        record = record_of(line, where, root)
        for k, sample in enumerate(line["samples"]):
            if "score" not in sample:
                raise ValueError(f"{where}: sample {k} has no 'score' (judge the samples first: mm-unidpo judge)")
            problem = None if sample["score"] is None else score_problem(sample["score"])
            if problem:
                raise ValueError(f"{where}: sample {k} has score {sample['score']!r}, {problem}")
        out.append((line, record))
    return out


def check_correctness(lines: list[tuple[dict[str, Any], PromptRecord]], source: str) -> None:
    """`--require-correct` needs a judge that grades answers: without a `correct` on any sample it would
    silently give no pairs."""
    if not any("correct" in (s.get("judge") or {}) for line, _ in lines for s in line["samples"]):
        raise UsageError(
            f"--require-correct: no sample in {source} has a 'correct' judgement; judge with one that grades "
            "answers (prm with --judge-arg benchmark=...) or leave --require-correct out"
        )


def write_pairs(
    records: list[PreferenceRecord],
    stats: PairStats,
    out: str | Path,
    *,
    image_root: str | None = None,
    plots: bool = True,
) -> dict[str, Any]:
    """The pairs file, `<out>.summary.json` and (with `plots`) `<out>.summary.png`; returns the summary."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    root = image_root or next((r.image_root for r in records if r.images), None) or out.parent
    save_preference_data(records, out, image_root=root)
    summary = {**stats.summary(), "pairs_file": str(out), "image_root": str(Path(root).resolve())}
    if plots:
        from .plots import pair_summary_plot  # lazy: matplotlib only when a plot is asked for

        summary["plot"] = pair_summary_plot(stats, Path(str(out) + ".summary.png"))
    Path(str(out) + ".summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def build_parser() -> argparse.ArgumentParser:
    d = PairConfig()
    p = argparse.ArgumentParser(prog="mm-unidpo pairs", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("scored", help="judged samples from mm-unidpo judge (JSON lines)")
    p.add_argument("--out", required=True, help="the pairs (our JSON-lines format)")
    p.add_argument("--strategy", choices=STRATEGIES, default=d.strategy)
    p.add_argument("--k", type=positive_int, default=d.k, help="pairs per prompt (strategy k)")
    p.add_argument("--min-gap", type=non_negative_float, default=d.min_gap, help="smallest score gap of a pair")
    p.add_argument("--length-balance", action="store_true", help="among equal gaps prefer pairs of similar length")
    p.add_argument(
        "--max-length-ratio", type=float, help="drop pairs whose word counts differ by more than this factor"
    )
    p.add_argument(
        "--require-correct",
        action="store_true",
        help="chosen correct and rejected incorrect (judges that grade answers: prm with a benchmark)",
    )
    p.add_argument(
        "--image-root",
        help="where the samples' image paths resolve, and the pairs' are relative to (default: the scored "
        "file's folder)",
    )
    p.add_argument("--no-plots", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = PairConfig(
        strategy=args.strategy,
        k=args.k,
        min_gap=args.min_gap,
        length_balance=args.length_balance,
        max_length_ratio=args.max_length_ratio,
        require_correct=args.require_correct,
    )
    check_out(args.out, args.scored)
    scored = read_scored(args.scored, args.image_root)
    if config.require_correct:
        check_correctness(scored, args.scored)
    records, stats = build_pairs(scored, config)
    summary = write_pairs(records, stats, args.out, image_root=args.image_root, plots=not args.no_plots)
    print(format_summary(summary))
    if Path(summary["image_root"]) != Path(args.out).resolve().parent and records and any(r.images for r in records):
        print(
            f"note: image paths in {args.out} are relative to {summary['image_root']}: train with "
            f"data.image_root: {summary['image_root']}"
        )
    return 0


def format_summary(s: dict[str, Any]) -> str:
    def num(value: Any) -> str:
        return "-" if value is None else f"{value:.2f}"

    return (
        f"{s['pairs']} pairs from {s['prompts_with_pairs']} of {s['prompts']} prompts -> {s['pairs_file']}\n"
        f"no pair: {s['prompts_all_tied']} all samples tied, {s['prompts_too_few']} with fewer than two distinct "
        f"samples, {s['prompts_below_gap']} below the gap, {s['prompts_filtered']} filtered; "
        f"{s['tied_pairs']} tied sample pairs; {s['empty_samples']} empty and {s['duplicate_samples']} repeated "
        f"samples\nscores: samples {num(s['mean_sample_score'])}, chosen {num(s['mean_chosen_score'])}, rejected "
        f"{num(s['mean_rejected_score'])} (gap {num(s['mean_gap'])}); words: chosen {num(s['mean_chosen_words'])}, "
        f"rejected {num(s['mean_rejected_words'])}" + (f"\nplots: {s['plot']}" if s.get("plot") else "")
    )
