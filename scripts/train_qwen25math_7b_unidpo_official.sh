#!/usr/bin/env bash
# Uni-DPO on math with Qwen2.5-Math-7B, official math settings (configs/qwen25math_7b_unidpo_official.yaml).
#
# One 24 GB GPU: QLoRA instead of the official full fine-tuning, and max length 2048 instead of 4096
# (4096 is estimated at ~12-14 GB too: --data.max_length=4096). Loss settings, data, 2 epochs and the
# global batch of 128 stay; the learning rate goes from 1e-6 to 1e-5 because LoRA needs a larger one.
# Expected peak ~10-12 GB allocated at 2048 tokens (ESTIMATE, `python scripts/estimate_memory.py`: NF4
# LM linear layers 3.4 GB + bf16 embeddings and LM head 2.2 GB + LoRA r=64 with AdamW 2.6 GB + activations
# 1.8 GB + one chunk of the chunked head 0.5 GB; full-vocabulary logits are never held).
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
