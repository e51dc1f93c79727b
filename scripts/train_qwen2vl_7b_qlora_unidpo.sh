#!/usr/bin/env bash
# Uni-DPO with Qwen2-VL-7B-Instruct, 4-bit QLoRA (configs/qwen2vl_7b_qlora_unidpo.yaml), on your data:
#   scripts/train_qwen2vl_7b_qlora_unidpo.sh --data.train=data/my_prefs.jsonl [--section.key=value ...]
#
# One 24 GB GPU: expected peak ~12-14 GB allocated at 2048 tokens (ESTIMATE, `python
# scripts/estimate_memory.py`; the breakdown is in the config's header).
# If it runs out of memory: --train.optim=paged_adamw_8bit, --data.max_length=1536, smaller images.
# Measure on the GPU with: python scripts/bench_qlora_memory.py --model qwen2vl-7b
#
# Many GPUs (DDP):  NUM_GPUS=4 scripts/train_qwen2vl_7b_qlora_unidpo.sh --data.train=...
#   = accelerate launch --config_file configs/accelerate/ddp.yaml --num_processes 4 \
#         -m mm_unidpo.cli train configs/qwen2vl_7b_qlora_unidpo.yaml --data.train=...
# DRY_RUN=1 prints the command instead of running it.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

launch_train configs/qwen2vl_7b_qlora_unidpo.yaml configs/accelerate/ddp.yaml "" -- "$@"
