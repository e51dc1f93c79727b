#!/usr/bin/env bash
# Uni-DPO on RLAIF-V with LLaVA-1.5-7B, 4-bit QLoRA (configs/llava15_7b_qlora_unidpo_rlaifv.yaml).
#
# One 24 GB GPU:   scripts/train_llava15_7b_qlora_unidpo_rlaifv.sh [--section.key=value ...]
# Expected peak ~9-11 GB allocated (ESTIMATE, `python scripts/estimate_memory.py`; the breakdown is in
# the config's header).
# Measure on the GPU with: python scripts/bench_qlora_memory.py --model llava15-7b
#
# Many GPUs (DDP, a 4-bit copy per GPU; effective batch = 16 x NUM_GPUS pairs):
#   NUM_GPUS=4 scripts/train_llava15_7b_qlora_unidpo_rlaifv.sh
# which runs
#   accelerate launch --config_file configs/accelerate/ddp.yaml --num_processes 4 \
#       -m mm_unidpo.cli train configs/llava15_7b_qlora_unidpo_rlaifv.yaml
# DRY_RUN=1 prints the command instead of running it.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

launch_train configs/llava15_7b_qlora_unidpo_rlaifv.yaml configs/accelerate/ddp.yaml "" -- "$@"
