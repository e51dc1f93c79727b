"""The memory table in README is the estimator's output, and the configs quote the same range."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_readme_memory_table_is_the_estimators_output() -> None:
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "estimate_memory.py")], capture_output=True, text=True, check=True
    ).stdout
    readme = (REPO / "README.md").read_text()
    rows = [line for line in out.splitlines() if line.startswith("| ") and "GB |" in line]
    assert len(rows) >= 5
    for row in rows:
        cells = row.split(" | ")
        # README's job column adds the max length; every number column must be the script's
        numbers = " | ".join(cells[1:])
        assert numbers in readme, f"README's memory table is stale for: {row}"
    # each config's header quotes the same range as the estimator for its job
    for config, job in [
        ("configs/llava15_7b_qlora_unidpo_rlaifv.yaml", "LLaVA-1.5-7B"),
        ("configs/qwen2vl_7b_qlora_unidpo.yaml", "Qwen2-VL-7B"),
    ]:
        row = next(r for r in rows if r.startswith(f"| {job}"))
        low, high = re.search(r"~(\d+)–(\d+) GB", row).groups()  # type: ignore[union-attr]
        assert f"~{low}-{high} GB" in (REPO / config).read_text(), config
