#!/usr/bin/env bash
# One command on one CUDA GPU, one table at the end (scripts/gpu_check.py says what each check is):
#   scripts/gpu_check.sh part1    # accelerate FSDP / ZeRO-3 on 1 GPU = the plain run; bench_vs_trl batch 8
#   scripts/gpu_check.sh part2    # QLoRA Uni-DPO peak memory, LLaVA-1.5-7B and Qwen2-VL-7B, vs README
#   scripts/gpu_check.sh all      # both, if every wheel is there (default)
#   scripts/gpu_check.sh part1 --dry-run   # nothing runs: what would, and what is skipped and why
# On a machine with no network: first, where there is one, `make gpu-wheels PART=part1` (or part2) fills
# scripts/gpu_wheels/ (git-ignored, under 64 MiB a part), then ship the repository with it. The checks run
# in a venv made here with --system-site-packages, so the machine's torch is used and never replaced; the
# wheels go into it without their dependencies.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
VENV="${GPU_CHECK_VENV:-runs/gpu_check/venv}"
if [[ ! -x "$VENV/bin/python" ]]; then
    "$PYTHON" -m venv --system-site-packages "$VENV"
fi
exec "$VENV/bin/python" scripts/gpu_check.py run "$@"
