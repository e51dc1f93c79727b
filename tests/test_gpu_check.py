"""scripts/gpu_check.sh / gpu_check.py without a GPU: the plan (what runs, what is skipped and why), the
wheels (pinned and hashed, never torch), the metric comparison and the table; the shell entry point in
--dry-run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import gpu_check  # noqa: E402
import gpu_check_wheels  # noqa: E402


def _args(tmp_path: Path, part: str = "all", **overrides) -> gpu_check.argparse.Namespace:
    values = dict(part=part, dry_run=True, cpu=False, wheels=str(tmp_path), workdir=None)
    return gpu_check.argparse.Namespace(**{**values, **overrides})


def test_the_plan_names_every_skipped_check_and_why(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "_cuda", lambda: True)
    real = gpu_check._importable
    monkeypatch.setattr(gpu_check, "_importable", lambda m: False if m in ("trl", "bitsandbytes") else real(m))
    todo, skipped = gpu_check.plan(_args(tmp_path, "part1"))
    assert [c.name for c in todo] == ["scale-out: accelerate FSDP / ZeRO-3 = plain"]
    notes = {r.check: r.note for r in skipped}
    assert notes["bench_vs_trl batch 8"] == f"trl: not installed, not in {tmp_path}"
    assert notes["QLoRA peak memory (bench_qlora_memory)"] == "in part2; this run is part1"

    (tmp_path / "trl-1.16.0-py3-none-any.whl").touch()  # a wheel beside the script counts as installable
    (tmp_path / "bitsandbytes-0.50.2-py3-none-manylinux_2_24_x86_64.whl").touch()
    todo, skipped = gpu_check.plan(_args(tmp_path, "all"))
    assert len(todo) == 3 and not skipped

    monkeypatch.setattr(gpu_check, "_cuda", lambda: False)
    todo, skipped = gpu_check.plan(_args(tmp_path, "all"))
    assert not todo and {r.note for r in skipped} == {"no CUDA device (use --cpu for the DDP check on CPU)"}
    todo, skipped = gpu_check.plan(_args(tmp_path, "all", cpu=True))
    assert [c.run for c in todo] == [gpu_check.scale_out]
    assert all("GPU only" in r.note for r in skipped)


def test_torch_is_never_among_the_wheels_installed(tmp_path):
    (tmp_path / "torch-2.11.0-cp311-cp311-manylinux_2_28_x86_64.whl").touch()
    with pytest.raises(SystemExit, match=r"torch-2\.11\.0.*never replaced"):
        gpu_check_wheels.wheel_files(tmp_path)


def test_wheels_are_pinned_to_the_lock_with_hashes():
    for part in gpu_check_wheels.PARTS:
        lines = gpu_check_wheels.pinned_requirements(part)
        assert len(lines) == len(gpu_check_wheels.PARTS[part])
        assert all("==" in line and "--hash=sha256:" in line for line in lines), lines  # pip's hash mode
    lock = (REPO / "requirements.lock").read_text()
    bnb = next(line for line in gpu_check_wheels.pinned_requirements("part2") if line.startswith("bitsandbytes=="))
    assert bnb.split()[0] == "bitsandbytes==0.50.2" and bnb.split()[0] in lock
    assert all(h.removeprefix("--hash=") in lock for h in bnb.split()[1:])


def test_metrics_compare_within_tolerance_and_name_the_worst():
    plain = [
        {"loss": 0.5, "rewards/margins": 0.0, "grad_norm": 2.0},
        {"loss": 0.4, "rewards/margins": 0.3, "grad_norm": 1.5},
    ]
    near = [{k: v * (1 + 1e-4) for k, v in step.items()} for step in plain]
    assert gpu_check.compare_metrics(plain, near)[0]
    off = [dict(plain[0]), {**plain[1], "rewards/margins": 0.31}]
    ok, worst, key = gpu_check.compare_metrics(plain, off)
    assert not ok and key == "rewards/margins" and worst == pytest.approx(0.01 / 0.3)
    assert gpu_check.compare_metrics(plain, plain[:1]) == (False, float("inf"), "2 vs 1 logged steps")
    assert gpu_check.compare_metrics(plain, [plain[0], {"loss": 0.4}])[2] == "grad_norm logged by one run only"


def test_the_shell_entry_point_dry_run_prints_one_table(tmp_path):
    """The venv is made with --system-site-packages (the machine's torch); nothing is installed or run."""
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels" / "trl-1.16.0-py3-none-any.whl").touch()
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_VENV": str(tmp_path / "venv")}
    result = subprocess.run(
        [str(REPO / "scripts" / "gpu_check.sh"), "part1", "--dry-run", "--wheels", str(tmp_path / "wheels")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "include-system-site-packages = true" in (tmp_path / "venv" / "pyvenv.cfg").read_text()
    out = result.stdout
    assert "trl-1.16.0-py3-none-any.whl (dry run: not installed)" in out
    assert "gpu_check part1 on dry run" in out
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert table[0].split("|")[1].strip() == "check" and len(table) == 2 + len(gpu_check.CHECKS)
    assert all(row.split("|")[2].strip() == "SKIP" for row in table[2:])
