#!/usr/bin/env bash
# Uni-DPO with Qwen2-VL-7B-Instruct, 4-bit QLoRA (configs/qwen2vl_7b_qlora_unidpo.yaml), on your data:
#   scripts/train_qwen2vl_7b_qlora_unidpo.sh --data.train=data/my_prefs.jsonl [--section.key=value ...]
#
# One 24 GB GPU: expected peak ~17-19 GB at 2048 tokens (ESTIMATE from parameter counts, not yet
# measured): NF4 LM linear layers 3.4 GB + bf16 embeddings and LM head (2 x 545M, vocab
# 152064) and ViT 3.5 GB + LoRA r=64 with AdamW 2.6 GB + checkpointed activations 0.8 GB + fp32
# logits of <= 2 x 2048 response tokens x 152064 vocab (2.5 GB a copy, 2-3 live in forward/backward)
# + ~1 GB context.
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
