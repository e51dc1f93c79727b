"""Smoke run of `scripts/bench_onpolicy.py --smoke` (toy sizes, the benchmark's code path): the last line is the
JSON summary with the agreed keys, equal outputs on both sides and self-consistent values. Timings are not
checked (the smoke run puts all sides in one process on a shared machine)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
KEYS = [
    "generate_speedup",
    "generate_greedy_equal",
    "generate_samples_equal",
    "generate_s_ours",
    "generate_s_hf",
    "generate_cpu_speedup",
    "generate_peak_mb_ours",
    "generate_peak_mb_hf",
    "judge_speedup",
    "judge_scores_max_abs_diff",
    "judge_verdicts_equal",
    "judge_s_ours",
    "judge_s_hf",
    "judge_cpu_speedup",
    "judge_peak_mb_ours",
    "judge_peak_mb_hf",
]


@pytest.mark.slow
def test_bench_onpolicy_smoke():
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_onpolicy.py"), "--smoke"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    final = json.loads(proc.stdout.strip().splitlines()[-1])
    assert list(final) == KEYS
    assert final["generate_greedy_equal"] is True and final["generate_samples_equal"] is True
    assert final["judge_verdicts_equal"] is True and final["judge_scores_max_abs_diff"] < 1e-4
    for key in ("generate", "judge"):
        assert final[f"{key}_speedup"] == pytest.approx(final[f"{key}_s_hf"] / final[f"{key}_s_ours"], rel=1e-3)
        assert all(
            math.isfinite(final[f"{key}_{m}"]) and final[f"{key}_{m}"] > 0
            for m in ("s_ours", "s_hf", "peak_mb_ours", "peak_mb_hf")
        )
    for section in ("GENERATE:", "JUDGE:", "TARGETS", "machine:", "command:"):
        assert section in proc.stdout, section
