#!/usr/bin/env bash
# Uni-DPO on math with Qwen2.5-Math-7B, official math settings (configs/qwen25math_7b_unidpo_official.yaml).
#
# One 24 GB GPU: QLoRA instead of the official full fine-tuning, and max length 2048 instead of 4096
# (at 4096 the estimate is 25-30 GB). Loss settings, data, 2 epochs and the global batch of 128 stay;
# the learning rate goes from 1e-6 to 1e-5 because LoRA needs a larger one.
# Expected peak ~16-19 GB at 2048 tokens (ESTIMATE from parameter counts, not yet measured: NF4 LM
# linear layers 3.4 GB + bf16 embeddings and LM head 2 x 545M = 2.2 GB + LoRA r=64 with AdamW 2.6 GB
# + checkpointed activations 0.8 GB + fp32 logits of <= 2 x 2048 response tokens x 152064 vocab,
# 2.5 GB a copy, 2-3 live).
#
# Many GPUs, as released (full FT, ZeRO-3, global batch 128):  NUM_GPUS=8 scripts/train_qwen25math_7b_unidpo_official.sh
#   = accelerate launch --config_file configs/accelerate/zero3.yaml --num_processes 8 \
#         -m mm_unidpo.cli train configs/qwen25math_7b_unidpo_official.yaml --train.gradient_accumulation_steps=16
# DRY_RUN=1 prints the command instead of running it.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

launch_train configs/qwen25math_7b_unidpo_official.yaml configs/accelerate/zero3.yaml 128/1 \
    --model.load_in_4bit=true --lora.enabled=true --reference.precompute=false \
    --data.max_length=2048 --train.learning_rate=1.0e-5 --train.gradient_accumulation_steps=128 \
    --train.output_dir=runs/qwen25math_7b_unidpo_qlora -- "$@"
