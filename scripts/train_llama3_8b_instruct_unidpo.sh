#!/usr/bin/env bash
# Uni-DPO with Meta-Llama-3-8B-Instruct, official text settings (configs/llama3_8b_instruct_unidpo.yaml).
#
# One 24 GB GPU: QLoRA instead of the official full fine-tuning, 1 pair per micro-batch instead of 2.
# Loss settings, data and the global batch of 128 stay; the learning rate goes from 1e-6 to 1e-5
# because LoRA needs a larger one.
# Expected peak ~11-13 GB allocated at 2048 tokens (ESTIMATE, `python scripts/estimate_memory.py`: NF4
# LM linear layers 3.6 GB + bf16 embeddings and LM head 2.1 GB + LoRA r=64 with AdamW 2.7 GB + activations
# 2.0 GB + one chunk of the chunked head 0.4 GB; full-vocabulary logits are never held).
#
# Many GPUs, as released (full FT, ZeRO-3, 2 pairs per GPU, global batch 128):
#   NUM_GPUS=4 scripts/train_llama3_8b_instruct_unidpo.sh
#   = accelerate launch --config_file configs/accelerate/zero3.yaml --num_processes 4 \
#         -m mm_unidpo.cli train configs/llama3_8b_instruct_unidpo.yaml --train.gradient_accumulation_steps=16
# DRY_RUN=1 prints the command instead of running it.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

launch_train configs/llama3_8b_instruct_unidpo.yaml configs/accelerate/zero3.yaml 128/2 \
    --model.load_in_4bit=true --lora.enabled=true --reference.precompute=false \
    --train.per_device_train_batch_size=1 --train.gradient_accumulation_steps=128 \
    --train.learning_rate=1.0e-5 --train.output_dir=runs/llama3_8b_instruct_unidpo_qlora -- "$@"
