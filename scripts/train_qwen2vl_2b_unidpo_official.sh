#!/usr/bin/env bash
# Uni-DPO with Qwen2-VL-2B, official multimodal settings (configs/qwen2vl_2b_unidpo_official.yaml).
#
# One 24 GB GPU: QLoRA instead of the official full fine-tuning (full FT of 2.2B params with AdamW
# needs ~27 GB before activations). Loss settings, data, schedule and the global batch of 128 stay;
# the learning rate goes from 6e-6 to 2e-5 because LoRA needs a larger one.
# Expected peak ~6-7 GB allocated at the official 4096 tokens (ESTIMATE, `python
# scripts/estimate_memory.py`: NF4 LM 0.7 GB + bf16 tied embeddings and ViT 1.8 GB + LoRA with AdamW
# 1.2 GB + activations 1.6 GB + one chunk of the chunked head 0.5 GB; full-vocabulary logits are never held).
# A 2B model also fits as plain LoRA in bf16: add --model.load_in_4bit=false.
#
# Many GPUs, as released (full FT, ZeRO-2, global batch 128):  NUM_GPUS=4 scripts/train_qwen2vl_2b_unidpo_official.sh
#   = accelerate launch --config_file configs/accelerate/zero2.yaml --num_processes 4 \
#         -m mm_unidpo.cli train configs/qwen2vl_2b_unidpo_official.yaml --train.gradient_accumulation_steps=32
# DRY_RUN=1 prints the command instead of running it.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

launch_train configs/qwen2vl_2b_unidpo_official.yaml configs/accelerate/zero2.yaml 128/1 \
    --model.load_in_4bit=true --lora.enabled=true --reference.precompute=false \
    --train.learning_rate=2.0e-5 --train.gradient_accumulation_steps=128 \
    --train.output_dir=runs/qwen2vl_2b_unidpo_qlora -- "$@"
