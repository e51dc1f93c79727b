#!/usr/bin/env python
"""The one memory estimate of a QLoRA step: what README, the configs' headers and the train scripts quote.

    python scripts/estimate_memory.py                 # every shipped 24 GB job, a table
    python scripts/estimate_memory.py --json          # the same as JSON lines

An ESTIMATE from parameter counts and tensor shapes, not a measurement (`scripts/bench_qlora_memory.py`
measures on a GPU). Each model is built on the meta device from its real architecture (the values of the
hub checkpoint's config.json; no download, no memory), its parameters are counted by role through the
family's spec (vision tower, projector: unquantised, frozen), and one step of our default path is summed:

    NF4 weights      language-model linear layers, 4 bits + double-quantised absmax (0.516 B/param)
    bf16 frozen      embeddings, LM head, vision tower, projector, norms (2 B/param)
    LoRA             r·(in + out) per language-model linear layer; fp32 weight + grad + AdamW m, v
                     (16 B/param; paged_adamw_8bit: 10 B/param)
    checkpointed     one bf16 hidden state per layer per token of the packed row (gradient checkpointing)
    one layer        the recomputed layer's saved tensors in backward: ~(12·hidden + 5·intermediate) bf16
                     values per token (norms, q/k/v/o, the MLP's gate/up/act, LoRA dropout copies)
    head             the chunked head: one chunk of fp32 logits, its softmax and its gradient
                     (chunk × vocab × 4 B × 3) — full-vocabulary logits of all tokens are never made

The packed row of one pair is prompt + chosen + rejected with each of prompt + response at max_length
(responses long enough to be cut): 2·max_length − prompt tokens. Allocated memory only: the CUDA context
(~0.5 GB) and the allocator's fragmentation come on top, hence the range's upper end (+15% + 0.5 GB).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench_qlora_memory import real_llava, real_qwen2vl  # noqa: E402

from mm_unidpo.models.families import FAMILIES  # noqa: E402
from mm_unidpo.models.head import chunk_rows  # noqa: E402

GB = 1e9
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)  # 4-bit values + 8-bit absmax per 64 + fp32 per 256 absmax blocks


def llama3_8b() -> tuple[Any, Any]:
    """meta-llama/Meta-Llama-3-8B-Instruct's config.json."""
    import transformers as T

    config = T.LlamaConfig(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        tie_word_embeddings=False,
    )
    return T.LlamaForCausalLM, config


def qwen25_math_7b() -> tuple[Any, Any]:
    """Qwen/Qwen2.5-Math-7B's config.json."""
    import transformers as T

    config = T.Qwen2Config(
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        vocab_size=152064,
        tie_word_embeddings=False,
    )
    return T.Qwen2ForCausalLM, config


def qwen2vl_2b() -> tuple[Any, Any]:
    """Qwen/Qwen2-VL-2B-Instruct's config.json: the 7B's ViT, a 1.5B Qwen2 LM with tied embeddings."""
    model_cls, config, _ = real_qwen2vl()
    text = dict(
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        vocab_size=151936,
        tie_word_embeddings=True,
        rope_parameters=config.text_config.rope_parameters,
    )
    vision = {**config.vision_config.to_dict(), "hidden_size": 1536}
    config = type(config)(
        text_config=text,
        vision_config=vision,
        image_token_id=config.image_token_id,
        video_token_id=config.video_token_id,
        tie_word_embeddings=True,
    )
    return model_cls, config


@dataclass(frozen=True)
class Job:
    name: str
    where: str  # the config or script that runs it
    build: Any  # () -> (model class, config)
    family: str
    max_length: int
    prompt_tokens: int  # image tokens + text of a typical prompt
    lora_r: int = 64
    optim: str = "adamw_torch"


def _vlm(builder: Any) -> Any:
    return lambda: builder()[:2]


JOBS = (
    Job(
        "LLaVA-1.5-7B (576 image tokens)",
        "configs/llava15_7b_qlora_unidpo_rlaifv.yaml",
        _vlm(real_llava),
        "llava",
        2048,
        576 + 50,
    ),
    Job(
        "Qwen2-VL-7B (576 image tokens)",
        "configs/qwen2vl_7b_qlora_unidpo.yaml",
        _vlm(real_qwen2vl),
        "qwen2_vl",
        2048,
        576 + 50,
    ),
    Job(
        "Qwen2-VL-2B (576 image tokens, 4096 tokens)",
        "scripts/train_qwen2vl_2b_unidpo_official.sh",
        qwen2vl_2b,
        "qwen2_vl",
        4096,
        576 + 50,
    ),
    Job("Llama-3-8B-Instruct (text)", "scripts/train_llama3_8b_instruct_unidpo.sh", llama3_8b, "causal_lm", 2048, 200),
    Job(
        "Qwen2.5-Math-7B (text)",
        "scripts/train_qwen25math_7b_unidpo_official.sh",
        qwen25_math_7b,
        "causal_lm",
        2048,
        300,
    ),
    Job(
        "Qwen2.5-Math-7B (text, 4096 tokens)",
        "scripts/train_qwen25math_7b_unidpo_official.sh --data.max_length=4096",
        qwen25_math_7b,
        "causal_lm",
        4096,
        1000,
    ),
)


@dataclass
class Estimate:
    job: str
    where: str
    params_b: float
    nf4_gb: float
    frozen_bf16_gb: float
    lora_gb: float
    checkpointed_gb: float
    one_layer_gb: float
    head_gb: float
    total_gb: float
    high_gb: float


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") or f".{p}." in f".{name}." for p in prefixes)


def estimate(job: Job) -> Estimate:
    model_cls, config = job.build()
    with torch.device("meta"):
        model = model_cls._from_config(config, dtype=torch.bfloat16)
    spec = FAMILIES[job.family].spec
    frozen_prefixes = tuple(spec.vision_modules) + tuple(spec.projector_modules)
    text = config.get_text_config()
    hidden, inter, layers, vocab = text.hidden_size, text.intermediate_size, text.num_hidden_layers, text.vocab_size
    head = model.get_output_embeddings()
    nf4 = frozen = lora = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module is not head and not _under(name, frozen_prefixes):
            nf4 += module.weight.numel()
            lora += job.lora_r * (module.in_features + module.out_features)
    total_params = sum(p.numel() for p in model.parameters())
    frozen = total_params - nf4
    tokens = 2 * job.max_length - job.prompt_tokens  # the packed row [prompt][chosen][rejected]
    scored = tokens - job.prompt_tokens
    chunk = min(scored, chunk_rows("auto", scored, hidden, vocab))
    per_param = 16 if job.optim == "adamw_torch" else 10
    parts = {
        "nf4_gb": nf4 * NF4_BYTES / GB,
        "frozen_bf16_gb": frozen * 2 / GB,
        "lora_gb": lora * per_param / GB,
        "checkpointed_gb": layers * tokens * hidden * 2 / GB,
        "one_layer_gb": tokens * (12 * hidden + 5 * inter) * 2 / GB,
        "head_gb": chunk * vocab * 4 * 3 / GB,
    }
    total = sum(parts.values())
    return Estimate(
        job.name,
        job.where,
        total_params / 1e9,
        **{k: round(v, 2) for k, v in parts.items()},
        total_gb=round(total, 1),
        high_gb=round(total * 1.15 + 0.5, 1),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    args = parser.parse_args(argv)
    rows = [estimate(job) for job in JOBS]
    if args.json:
        for row in rows:
            print(json.dumps(asdict(row)))
        return 0
    print("| job | params | NF4 | bf16 frozen | LoRA + AdamW | checkpointed | one layer | head chunk | estimate |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r.job} | {r.params_b:.2f}B | {r.nf4_gb:.2f} | {r.frozen_bf16_gb:.2f} | {r.lora_gb:.2f} | "
            f"{r.checkpointed_gb:.2f} | {r.one_layer_gb:.2f} | {r.head_gb:.2f} | "
            f"~{r.total_gb:.0f}–{r.high_gb:.0f} GB |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
