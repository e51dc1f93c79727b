#!/usr/bin/env python
"""Peak memory and step time of one QLoRA Uni-DPO step at the real model sizes.

    python scripts/bench_qlora_memory.py                      # GPU: LLaVA-1.5-7B and Qwen2-VL-7B
    python scripts/bench_qlora_memory.py --model qwen2vl-7b --max-length 2048 --optim paged_adamw_8bit
    python scripts/bench_qlora_memory.py --tiny               # CPU smoke run (automatic without CUDA)

GPU mode builds each model from its REAL architecture (written out below: no download) with random
weights in bf16, saves it as a checkpoint (disk: ~14 GB for LLaVA-1.5-7B, ~17 GB for Qwen2-VL-7B, in
--workdir, deleted afterwards), then trains exactly as `mm-unidpo train` does with the shipped config
(configs/llava15_7b_qlora_unidpo_rlaifv.yaml, configs/qwen2vl_7b_qlora_unidpo.yaml): our 4-bit loader,
our LoRA setup, and `PreferenceTrainer` (adapter log-probs -> reference with the adapter off ->
preference_loss), micro-batch 1 pair, gradient checkpointing, one optimizer step per pair. The pair is
one image (576 image tokens for both models) and responses long enough that chosen and rejected are
both cut to --max-length tokens (prompt + response); by default the pair is one packed row
[prompt][chosen][rejected] (shared prefix), --plain measures the two-row layout. The tokenizer is an offline stand-in (the real ones cannot be
downloaded here): token ids differ, sequence lengths and tensor shapes are the real ones.
Reported: peak allocated / reserved GPU memory over the steps, memory after setup, median step time
(forward + backward + optimizer, the first step excluded as warm-up).

Without CUDA (or with --tiny) it runs the same path on `mm_unidpo.testing.tiny(...)` models, 4-bit on
CPU through bitsandbytes, and reports process peak RSS and step time: a CPU SMOKE RUN that checks the
benchmark works — its numbers say nothing about GPU memory. The last line of output is JSON.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODELS: dict[str, dict[str, Any]] = {
    "llava15-7b": {"family": "llava", "config": "configs/llava15_7b_qlora_unidpo_rlaifv.yaml",
                   "hub_id": "llava-hf/llava-1.5-7b-hf", "image": (336, 336)},  # 24 x 24 = 576 tokens
    "qwen2vl-7b": {"family": "qwen2_vl", "config": "configs/qwen2vl_7b_qlora_unidpo.yaml",
                   "hub_id": "Qwen/Qwen2-VL-7B-Instruct", "image": (672, 672)},  # (672/28)^2 = 576 tokens
}
CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
GB = 1024 ** 3


# ---- the real architectures (values of the hub checkpoints' config.json) --------------------------

def real_llava():
    """llava-hf/llava-1.5-7b-hf: Vicuna-7B (Llama-2 7B) + CLIP ViT-L/14-336 + 2-layer GELU projector."""
    from transformers import (CLIPImageProcessorPil, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

    from mm_unidpo.testing import tiny_tokenizer

    tok = tiny_tokenizer("llava")
    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                              image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu",
                              layer_norm_eps=1e-5)
    text = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=32, vocab_size=32064, max_position_embeddings=4096, rms_norm_eps=1e-5,
                       rope_theta=10000.0, hidden_act="silu", tie_word_embeddings=False,
                       pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=tok.image_token_id,
                         image_seq_length=576, projector_hidden_act="gelu", vision_feature_layer=-2,
                         vision_feature_select_strategy="default")
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
                                           image_mean=CLIP_MEAN, image_std=CLIP_STD)
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tok, patch_size=14,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=tok.chat_template)
    return LlavaForConditionalGeneration, config, processor


def real_qwen2vl():
    """Qwen/Qwen2-VL-7B-Instruct: Qwen2-7B language model (GQA 28/4, M-RoPE) + 675M ViT (depth 32)."""
    import transformers as T

    from mm_unidpo.models.processors import processor_without_video
    from mm_unidpo.testing import tiny_tokenizer

    tok = tiny_tokenizer("qwen2_vl")
    text = dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                num_key_value_heads=4, vocab_size=152064, max_position_embeddings=32768, rms_norm_eps=1e-6,
                hidden_act="silu", tie_word_embeddings=False, use_sliding_window=False, sliding_window=32768,
                max_window_layers=28, attention_dropout=0.0, pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
                rope_parameters={"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1e6})
    vision = dict(depth=32, embed_dim=1280, hidden_size=3584, mlp_ratio=4, num_heads=16, in_channels=3,
                  patch_size=14, spatial_merge_size=2, temporal_patch_size=2, hidden_act="quick_gelu")
    config = T.Qwen2VLConfig(
        text_config=text, vision_config=vision, image_token_id=tok.image_token_id, video_token_id=tok.video_token_id,
        vision_start_token_id=tok.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tok.convert_tokens_to_ids("<|vision_end|>"))
    image_processor = T.Qwen2VLImageProcessorPil(
        patch_size=14, merge_size=2, temporal_patch_size=2, image_mean=CLIP_MEAN, image_std=CLIP_STD,
        size={"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 16384})  # min_pixels / max_pixels
    processor = processor_without_video(T.Qwen2VLProcessor, image_processor=image_processor, tokenizer=tok)
    return T.Qwen2VLForConditionalGeneration, config, processor


def build_checkpoint(name: str, directory: Path, cpu_smoke: bool) -> int:
    """Write a random-weight checkpoint (model + processor) of `name`; returns its parameter count."""
    if cpu_smoke:
        from mm_unidpo.testing import tiny

        model, processor = tiny(MODELS[name]["family"], seed=0)
    else:
        model_cls, config, processor = {"llava15-7b": real_llava, "qwen2vl-7b": real_qwen2vl}[name]()
        torch.manual_seed(0)
        with torch.device("cuda"):  # random init on the GPU: seconds instead of minutes on the CPU
            model = model_cls._from_config(config, dtype=torch.bfloat16, attn_implementation="sdpa")
    n_params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    if getattr(processor, "image_processor", None) is not None:
        processor.image_processor.save_pretrained(directory)  # the hub layout (preprocessor_config.json)
    del model
    _free()
    return n_params


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def synthetic_data(directory: Path, image_size: tuple[int, int]) -> Path:
    """One pair with one noise image and responses far longer than any max length (cut to it)."""
    from PIL import Image

    from mm_unidpo.data import PreferenceRecord, save_preference_data

    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (image_size[1], image_size[0], 3), generator=generator, dtype=torch.uint8)
    Image.fromarray(pixels.numpy()).save(directory / "image.png")
    words = "the image shows a person standing next to a rocket in a green field under a blue sky".split()
    chosen = " ".join(words[i % len(words)] for i in range(6000))
    rejected = " ".join(words[(i * 7) % len(words)] for i in range(6000))
    record = PreferenceRecord(prompt="<image>\nDescribe the image in detail.", chosen=chosen, rejected=rejected,
                              images=["image.png"], score_chosen=8.0, score_rejected=3.0, id="bench",
                              image_root=str(directory))
    return save_preference_data([record] * 8, directory / "pairs.jsonl")


class StepTimer:
    """A TrainerCallback (made a subclass lazily, so the module imports without transformers)."""

    def __new__(cls):
        from transformers import TrainerCallback

        class _Timer(TrainerCallback):
            def __init__(self) -> None:
                self.times: list[float] = []
                self._start = 0.0

            def on_step_begin(self, args, state, control, **kwargs):
                _sync()
                self._start = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                _sync()
                self.times.append(time.perf_counter() - self._start)

        return _Timer()


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run_one(name: str, args: argparse.Namespace, cpu_smoke: bool, workdir: Path) -> dict[str, Any]:
    from mm_unidpo.data import load_preference_data
    from mm_unidpo.models import get_adapter
    from mm_unidpo.train.config import load_config, training_arguments
    from mm_unidpo.train.setup import build_models
    from mm_unidpo.train.trainer import PreferenceTrainer, RecordDataset

    spec = MODELS[name]
    directory = workdir / name
    (directory / "ckpt").mkdir(parents=True, exist_ok=True)
    n_params = build_checkpoint(name, directory / "ckpt", cpu_smoke)
    data = synthetic_data(directory, spec["image"])
    overrides = [f"--model.name_or_path={directory / 'ckpt'}", f"--data.train={data}", "--data.format=unidpo",
                 "--data.eval=null", "--data.image_root=null", f"--data.max_length={args.max_length}",
                 f"--train.output_dir={directory / 'run'}", f"--train.max_steps={args.steps}",
                 "--train.per_device_train_batch_size=1", "--train.gradient_accumulation_steps=1",
                 "--train.save_strategy='no'", "--train.logging_steps=1", "--train.report_to=none",
                 "--train.dataloader_num_workers=0", "--reference.precompute=false"]
    if args.optim:
        overrides.append(f"--train.optim={args.optim}")
    if args.plain:
        overrides.append("--model.shared_prefix=false")
    if cpu_smoke:  # fp32 compute on CPU (bf16 matmuls there are slow and not what a GPU does anyway)
        overrides += ["--model.dtype=float32", "--train.bf16=false", "--train.use_cpu=true",
                      "--lora.r=8", "--lora.alpha=16", "--train.optim=adamw_torch"]
    config = load_config(REPO / spec["config"], overrides)
    training_args = training_arguments(config)
    if torch.cuda.is_available() and not cpu_smoke:
        torch.cuda.reset_peak_memory_stats()
    model, processor, reference = build_models(config, training_args.gradient_checkpointing)
    adapter = get_adapter(model, processor, family=config.model.family, max_length=config.data.max_length,
                          shared_prefix=config.model.shared_prefix)
    records = load_preference_data(config.data.train, format="unidpo").records
    batch = adapter.collate(records[:1])
    timer = StepTimer()
    trainer = PreferenceTrainer(model=model, args=training_args, train_dataset=RecordDataset(records),
                                processing_class=processor, adapter=adapter, loss_name=config.loss.name,
                                loss_params=config.loss.params, reference_model=reference, callbacks=[timer])
    result: dict[str, Any] = {
        "model": name if not cpu_smoke else f"{name} (tiny stand-in)", "architecture": spec["hub_id"],
        "params": n_params, "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "lora_r": config.lora.r, "load_in_4bit": config.model.load_in_4bit, "max_length": config.data.max_length,
        "layout": "packed" if adapter.shared_prefix else "plain", "input_shape": list(batch.input_ids.shape),
        "loss": config.loss.name,
        "optim": training_args.optim.value if hasattr(training_args.optim, "value") else str(training_args.optim),
    }
    if cpu_smoke:
        import psutil

        result["rss_after_setup_gb"] = round(psutil.Process().memory_info().rss / GB, 3)
    else:
        result["weights_after_setup_gb"] = round(torch.cuda.memory_allocated() / GB, 2)
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    steps = timer.times[1:] or timer.times
    result["step_time_s"] = round(statistics.median(steps), 3)
    result["steps_timed"] = len(steps)
    if cpu_smoke:
        result["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB, 3)
    else:
        result["peak_allocated_gb"] = round(torch.cuda.max_memory_allocated() / GB, 2)
        result["peak_reserved_gb"] = round(torch.cuda.max_memory_reserved() / GB, 2)
    del trainer, model, reference, adapter
    _free()
    if not args.keep:
        shutil.rmtree(directory, ignore_errors=True)
    return result


def print_table(results: list[dict[str, Any]], cpu_smoke: bool) -> None:
    if cpu_smoke:
        columns = [("model", 26), ("params", 8), ("max_length", 10), ("layout", 6), ("input_shape", 11),
                   ("rss_after_setup_gb", 18), ("peak_rss_gb", 11), ("step_time_s", 11)]
    else:
        columns = [("model", 12), ("params", 13), ("max_length", 10), ("layout", 6), ("input_shape", 11), ("optim", 16),
                   ("weights_after_setup_gb", 22), ("peak_allocated_gb", 17), ("peak_reserved_gb", 16),
                   ("step_time_s", 11)]
    print("  ".join(f"{key:>{width}}" for key, width in columns))
    for row in results:
        print("  ".join(f"{str(row.get(key)):>{width}}" for key, width in columns))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=[*MODELS, "all"], default="all")
    parser.add_argument("--max-length", type=int, help="tokens per sequence (default 2048; CPU smoke: 512)")
    parser.add_argument("--steps", type=int, help="optimizer steps, the first not timed (default 3; CPU smoke: 2)")
    parser.add_argument("--plain", action="store_true",
                        help="two rows per pair instead of the shared-prefix packed row (model.shared_prefix=false)")
    parser.add_argument("--optim", help="override the config's optimizer, e.g. paged_adamw_8bit")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke run on tiny models (default without CUDA)")
    parser.add_argument("--workdir", help="where the random checkpoints go (GPU: ~17 GB free needed)")
    parser.add_argument("--keep", action="store_true", help="keep the checkpoints and run folders")
    args = parser.parse_args(argv)
    cpu_smoke = args.tiny or not torch.cuda.is_available()
    args.max_length = args.max_length or (512 if cpu_smoke else 2048)
    args.steps = args.steps or (2 if cpu_smoke else 3)
    if cpu_smoke and not args.tiny:
        print("no CUDA device: running the CPU smoke run on tiny models (--tiny); these are not GPU figures")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    names = list(MODELS) if args.model == "all" else [args.model]
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_qlora_"))
    results = [run_one(name, args, cpu_smoke, workdir) for name in names]
    if not args.keep and not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    device = "cpu" if cpu_smoke else torch.cuda.get_device_name()
    label = "CPU SMOKE RUN (tiny models, not GPU figures)" if cpu_smoke else f"GPU: {device}"
    print(f"\nQLoRA Uni-DPO step, micro-batch 1 pair, gradient checkpointing — {label}")
    print_table(results, cpu_smoke)
    print(json.dumps({"bench": "qlora_memory", "mode": "cpu_smoke" if cpu_smoke else "gpu", "device": device,
                      "torch": torch.__version__, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
