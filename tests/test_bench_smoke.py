"""Smoke run of `scripts/bench_vs_trl.py --smoke` (toy sizes, same code path as the real benchmark):
the last line is the JSON summary with exactly the agreed keys and self-consistent values. Timings are
not checked (the smoke workers run side by side on a shared machine)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "bench_vs_trl.py"
KEYS = ["pairs_per_s_ours", "pairs_per_s_trl", "speedup", "peak_mem_ours_mb", "peak_mem_trl_mb", "mem_ratio",
        "tokens_per_pair", "min_tokens_per_pair", "speedup_b8", "mem_ratio_b8", "tokens_ratio_b8",
        "head_mem_ratio_152k"]


@pytest.mark.slow
def test_bench_vs_trl_smoke(tmp_path):
    pytest.importorskip("trl")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    plot = tmp_path / "scaling.png"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--plot", str(plot)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = proc.stdout.strip().splitlines()
    final = json.loads(lines[-1])
    assert list(final) == KEYS
    assert all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in final.values()), final
    assert final["speedup"] == pytest.approx(final["pairs_per_s_ours"] / final["pairs_per_s_trl"], rel=1e-2)
    assert final["mem_ratio"] == pytest.approx(final["peak_mem_ours_mb"] / final["peak_mem_trl_mb"], rel=1e-2)
    # One packed row per LM pass: exactly the minimum (image + prompt + both responses), at batch 1 and for a
    # micro-batch of 8 pairs of mixed lengths (padding-free)
    assert final["tokens_per_pair"] == pytest.approx(final["min_tokens_per_pair"], rel=1e-3)
    assert final["tokens_ratio_b8"] == pytest.approx(1.0, rel=1e-3)
    assert final["min_tokens_per_pair"] > 64  # the smoke image alone is 64 tokens
    assert final["head_mem_ratio_152k"] < 1.0
    text = proc.stdout
    for section in ("BATCH 1", "BATCH 8 MIXED", "SCALING", "LM HEAD", "LOSS OVERHEAD", "TARGETS", "machine:",
                    "command:"):
        assert section in text, section
    assert plot.is_file() and plot.stat().st_size > 10_000
    # TRL runs two rows per pair (prompt + image twice), padded to the micro-batch's longest: more tokens per pass.
    for batch in ("BATCH 1", "BATCH 8"):
        block = text[text.index(batch):]
        trl = next(line for line in block.splitlines() if line.startswith("TRL-compact"))
        assert float(trl.split()[-2]) > 1.3, trl  # its "x min" column
