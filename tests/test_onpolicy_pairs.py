"""`mm-unidpo pairs`: the strategies (best vs worst, k disjoint pairs, all above a gap), ties and prompts
without a pair counted by why, length balancing and the correctness filter, the output read back by
`load_preference_data`, the summary and its plot, and unscored input refused naming the line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mm_unidpo.data import load_preference_data
from mm_unidpo.cli import main as cli
from mm_unidpo.onpolicy.pairs import PairConfig, build_pairs, main, read_scored
from mm_unidpo.onpolicy.records import record_of


def _line(index: int, samples: list[tuple[str, float | None]], **judge) -> dict:
    return {
        "index": index,
        "id": f"p{index}",
        "prompt": f"Question {index}?",
        "images": [],
        "image_root": None,
        "meta": {},
        "samples": [{"text": t, "score": s, **({"judge": judge[t]} if t in judge else {})} for t, s in samples],
    }


def _pairs(lines: list[dict], **config):
    return build_pairs([(line, record_of(line, "test", ".")) for line in lines], PairConfig(**config))


def _texts(records) -> list[tuple[str, str, float, float]]:
    return [(r.chosen, r.rejected, r.score_chosen, r.score_rejected) for r in records]


SAMPLES = [("a", 3.0), ("b", 9.0), ("c", 1.0), ("d", 9.0), ("e", 5.0), ("f", 1.0)]


def test_best_vs_worst_takes_the_first_best_and_the_first_worst():
    records, stats = _pairs([_line(0, SAMPLES)])
    assert _texts(records) == [("b", "c", 9.0, 1.0)]
    assert records[0].id == "p0-1-2" and stats.pairs == 1 and stats.prompts_with_pairs == 1
    assert stats.tied_pairs == 2  # b = d and c = f
    assert stats.gaps == [8.0] and stats.sample_scores == [3.0, 9.0, 1.0, 9.0, 5.0, 1.0]


def test_k_pairs_are_disjoint_and_largest_gaps_first():
    records, _ = _pairs([_line(0, SAMPLES)], strategy="k", k=3)
    assert _texts(records) == [("b", "c", 9.0, 1.0), ("d", "f", 9.0, 1.0), ("e", "a", 5.0, 3.0)]
    records, _ = _pairs([_line(0, SAMPLES)], strategy="k", k=3, min_gap=4.0)
    assert [(r.chosen, r.rejected) for r in records] == [("b", "c"), ("d", "f")]  # e-a: gap 2 < 4


def test_all_pairs_above_the_gap():
    records, stats = _pairs([_line(0, SAMPLES)], strategy="all", min_gap=4.0)
    expected = {
        ("b", "c"),
        ("b", "f"),
        ("d", "c"),
        ("d", "f"),
        ("b", "a"),
        ("d", "a"),
        ("e", "c"),
        ("e", "f"),
        ("b", "e"),
        ("d", "e"),
    }  # 9 - 5 = 4: a gap of exactly min_gap counts
    assert {(r.chosen, r.rejected) for r in records} == expected and stats.pairs == 10
    assert all(r.score_chosen - r.score_rejected >= 4.0 for r in records)
    assert [r.score_chosen - r.score_rejected for r in records] == sorted(stats.gaps, reverse=True)


def test_prompts_without_a_pair_are_counted_by_why():
    lines = [
        _line(0, [("a", 5.0), ("b", 5.0), ("c", 5.0)]),  # all tied
        _line(1, [("a", 5.0), ("", None), ("a ", 7.0)]),  # one distinct text (and an empty sample)
        _line(2, [("a", 5.0), ("b", 5.5)]),  # below the gap
        _line(3, [("short", 9.0), ("a much much longer answer", 1.0)]),  # filtered by length
        _line(4, [("good", 8.0), ("bad", 2.0)]),
    ]
    records, stats = _pairs(lines, min_gap=1.0, max_length_ratio=2.0)
    assert [r.id for r in records] == ["p4-0-1"]
    assert (stats.prompts_all_tied, stats.prompts_too_few, stats.prompts_below_gap, stats.prompts_filtered) == (
        1,
        1,
        1,
        1,
    )
    assert stats.prompts_without_pairs == 4 and stats.tied_pairs == 3
    assert stats.empty_samples == 1 and stats.duplicate_samples == 1
    summary = stats.summary()
    assert summary["mean_chosen_score"] == 8.0 and summary["prompts_without_pairs"] == 4 and "gaps" not in summary


def test_length_balance_and_required_correctness():
    samples = [("x y z w", 9.0), ("x y", 9.0), ("p q", 2.0), ("p q r s t u", 2.0)]
    plain, _ = _pairs([_line(0, samples)])
    balanced, stats = _pairs([_line(0, samples)], length_balance=True)
    assert (plain[0].chosen, plain[0].rejected) == ("x y z w", "p q")
    assert (balanced[0].chosen, balanced[0].rejected) == ("x y", "p q")  # the gap is the same, lengths match
    assert stats.chosen_lengths == [2] and stats.rejected_lengths == [2]
    graded = _line(
        0,
        [("right", 6.0), ("wrong", 9.0), ("also wrong", 1.0)],
        right={"correct": True},
        wrong={"correct": False},
        **{"also wrong": {"correct": False}},
    )
    records, _ = _pairs([graded], require_correct=True)
    assert (records[0].chosen, records[0].rejected) == ("right", "also wrong")


def test_command_writes_our_format_and_a_summary(tmp_path, capsys):
    scored = tmp_path / "scored.jsonl"
    lines = [_line(0, SAMPLES), _line(1, [("a", 2.0), ("b", 2.0)])]
    scored.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "pairs" / "pairs.jsonl"
    assert main([str(scored), "--out", str(out), "--strategy", "k", "--k", "2"]) == 0
    printed = capsys.readouterr().out
    assert "2 pairs from 1 of 2 prompts" in printed and "1 all samples tied" in printed
    data = load_preference_data(out)
    assert data.format == "unidpo" and [(r.chosen, r.rejected) for r in data] == [("b", "c"), ("d", "f")]
    assert [(r.score_chosen, r.score_rejected) for r in data] == [(9.0, 1.0), (9.0, 1.0)]
    summary = json.loads(Path(str(out) + ".summary.json").read_text())
    assert summary["pairs"] == 2 and summary["prompts_all_tied"] == 1 and summary["tied_pairs"] == 3
    assert Path(str(out) + ".summary.png").stat().st_size > 5000


def test_unscored_input_is_refused(tmp_path, capsys):
    path = tmp_path / "samples.jsonl"
    path.write_text(
        json.dumps(_line(0, SAMPLES)) + "\n" + json.dumps({**_line(1, []), "samples": [{"text": "a"}]}) + "\n"
    )
    with pytest.raises(ValueError, match=r"samples.jsonl, line 2: sample 0 has no 'score'"):
        read_scored(path)
    assert cli(["pairs", str(path), "--out", str(tmp_path / "p.jsonl")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mm-unidpo pairs: error: ") and "mm-unidpo judge" in err
