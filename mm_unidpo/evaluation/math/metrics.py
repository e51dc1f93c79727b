"""Scores over graded generations: accuracy, unbiased pass@k, maj@n, breakdowns, markdown report."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021, arXiv 2107.03374): 1 - C(n-c, k) / C(n, k), computed stably."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    prob_all_wrong = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_wrong *= 1.0 - k / i
    return 1.0 - prob_all_wrong


def k_values(n: int) -> list[int]:
    """1, 2, 4, ... up to n, and n itself."""
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    return [*ks, n]


def majority_vote(
    predictions: Sequence[str | None], correct: Sequence[bool], equivalent: Callable[[str, str], bool]
) -> tuple[str | None, bool]:
    """(voted answer, its correctness) over the extracted answers; missing answers do not vote.

    Answers are grouped by equivalence (``\\frac12`` and ``0.5`` vote together): each joins the first
    group whose representative it is equivalent to. Ties go to the group seen first.
    """
    groups: list[list[Any]] = []  # [representative, votes, correct]
    for pred, ok in zip(predictions, correct):
        if pred is None:
            continue
        for group in groups:
            if pred == group[0] or equivalent(pred, group[0]):
                group[1] += 1
                break
        else:
            groups.append([pred, 1, bool(ok)])
    if not groups:
        return None, False
    best = max(groups, key=lambda g: g[1])  # max keeps the first of equal counts
    return best[0], best[2]


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _item_accuracy(record: dict[str, Any]) -> float:
    return _mean([float(c) for c in record["correct"]])


def summarize(records: Sequence[dict[str, Any]], breakdowns: Sequence[str] = ()) -> dict[str, Any]:
    """Scores of one benchmark from its graded records (see ``harness.make_record``).

    ``accuracy`` is the mean over items of the fraction of correct samples: greedy accuracy when
    n = 1, and the unbiased pass@1 otherwise.
    """
    n = min((len(r["correct"]) for r in records), default=1)
    summary: dict[str, Any] = {
        "items": len(records),
        "samples_per_item": n,
        "accuracy": _mean([_item_accuracy(r) for r in records]),
        "no_answer_rate": _mean([_mean([float(p is None) for p in r["predictions"]]) for r in records]),
    }
    if n > 1:
        summary["pass@k"] = {
            f"pass@{k}": _mean([pass_at_k(len(r["correct"]), sum(map(bool, r["correct"])), k) for r in records])
            for k in k_values(n)
        }
        summary[f"maj@{n}"] = _mean([float(r["majority"]["correct"]) for r in records])
    for key in breakdowns:
        groups: dict[str, list[float]] = {}
        for r in records:
            if key in r.get("meta", {}):
                groups.setdefault(str(r["meta"][key]), []).append(_item_accuracy(r))
        if groups:
            summary[f"by_{key}"] = {g: {"items": len(v), "accuracy": _mean(v)} for g, v in sorted(groups.items())}
    return summary


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def markdown_report(results: dict[str, Any]) -> str:
    """One table of all benchmarks, then one table per breakdown (MATH-500 level and subject)."""
    benches = results["benchmarks"]
    extra = sorted({k for s in benches.values() for k in s.get("pass@k", {})}, key=lambda k: int(k[5:]))
    maj = sorted({k for s in benches.values() for k in s if k.startswith("maj@")})
    header = ["benchmark", "items", "accuracy (%)", *[f"{k} (%)" for k in extra + maj], "no answer (%)"]
    lines = [
        f"# Math evaluation: {results.get('config', {}).get('model', '')}",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for name, s in benches.items():
        cells = [name, str(s["items"]), _pct(s["accuracy"])]
        cells += [_pct(s["pass@k"][k]) if k in s.get("pass@k", {}) else "" for k in extra]
        cells += [_pct(s[k]) if k in s else "" for k in maj]
        lines.append("| " + " | ".join([*cells, _pct(s["no_answer_rate"])]) + " |")
    for name, s in benches.items():
        for key in sorted(k for k in s if k.startswith("by_")):
            lines += ["", f"## {name} by {key[3:]}", "", f"| {key[3:]} | items | accuracy (%) |", "|---|---|---|"]
            lines += [f"| {g} | {v['items']} | {_pct(v['accuracy'])} |" for g, v in s[key].items()]
    return "\n".join(lines) + "\n"
