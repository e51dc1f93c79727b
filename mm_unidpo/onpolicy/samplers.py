"""The sampling backends of `mm-unidpo generate`: what turns rendered prompts into `--n` samples each.

* `HFSampler`: the family adapter's `generate` (every VLM family and causal LMs, CPU or GPU), each prompt
  prefilled once and its KV cache repeated to the n samples (`sampling.py`), in runs within a token budget.
* `VLLMSampler`: vLLM (when installed), images as `multi_modal_data`, a LoRA adapter as a LoRA request.

`load_sampler` builds either from a model path or hub id; `GenerateConfig` is what shapes the samples.
"""

from __future__ import annotations

import importlib.util
import logging
import types
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mm_unidpo.data import load_record_images

from .records import PromptRecord

logger = logging.getLogger(__name__)

# Rows x (prompt + new tokens) per generate call, the KV cache's size (LLaVA-7B in bf16: 0.5 MiB a token).
DEFAULT_TOKEN_BUDGET = 1 << 16


@dataclass
class GenerateConfig:
    """What shapes the samples (all kept in the output's settings file)."""

    n: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    batch_size: int = 8  # prompts per generate call (n rows each) and per write
    seed: int = 0
    logprobs: bool = False

    def __post_init__(self) -> None:
        if self.n < 1 or self.max_new_tokens < 1 or self.batch_size < 1:
            raise ValueError("n, max_new_tokens and batch_size must be >= 1")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0: greedy), got {self.temperature}")
        if self.n > 1 and self.temperature <= 0:
            raise ValueError("n > 1 needs sampling: set a temperature > 0 (greedy samples would all be identical)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


# ---- backends --------------------------------------------------------------------------------------


class HFSampler:
    """Batched sampling through the family adapter's `generate` (a loaded model and its processor)."""

    def __init__(
        self,
        model: Any,
        processor: Any,
        config: GenerateConfig,
        *,
        family: str | None = None,
        token_budget: int | None = DEFAULT_TOKEN_BUDGET,
    ):
        from mm_unidpo.models import get_adapter  # lazy: torch; judge, pairs, score run without

        self.model, self.config, self.token_budget = model, config, token_budget
        self.adapter = get_adapter(model, processor, family=family)
        self._positions: dict[int, tuple[PromptRecord, int]] = {}  # by identity; holds the record alive

    def render(self, record: PromptRecord) -> str:
        return self.adapter.render_prompt(record)

    def prompt_positions(self, record: PromptRecord) -> int:
        """Positions the prompt takes, image tokens included. Remembered: the pre-check (`check_prompts`)
        and the batching both ask, and each answer runs the image processor."""
        if id(record) not in self._positions:
            hooks = self.adapter.hooks
            ids = hooks.tokenize_prompt(self.render(record), load_record_images(record), record)[0]
            self._positions[id(record)] = (record, hooks.prompt_positions(ids))
        return self._positions[id(record)][1]

    def sample(self, records: Sequence[PromptRecord], seeds: Sequence[int]) -> list[list[dict[str, Any]]]:
        """`config.n` samples per record, one prefill per prompt (`sampling.py`); the records, longest
        first, go in runs within `token_budget`, each seeded with its first record's seed."""
        import torch

        from .sampling import generate_n, micro_batches  # lazy: torch

        c, adapter = self.config, self.adapter
        texts = [self.render(r) for r in records]
        images = [load_record_images(r) for r in records]
        settings: dict[str, Any] = {"max_new_tokens": c.max_new_tokens}
        if c.temperature > 0:
            settings.update(do_sample=True, temperature=c.temperature, top_p=c.top_p, top_k=0)
        else:
            settings.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if c.logprobs:
            settings.update(return_dict_in_generate=True, output_logits=True)
        lengths = [self.prompt_positions(r) for r in records]
        rows: list[dict[str, Any]] = []
        was_training = self.model.training
        self.model.eval()
        try:
            for run in micro_batches(lengths, c.n, c.max_new_tokens, self.token_budget):
                torch.manual_seed(seeds[run[0]])
                out = generate_n(
                    adapter, self.model, [texts[i] for i in run], [images[i] for i in run], c.n, **settings
                )
                ids = out if isinstance(out, torch.Tensor) else out.sequences
                logps = _token_logps(out.logits, ids) if c.logprobs else None
                rows += [
                    self._sample(ids[k].tolist(), None if logps is None else logps[k].tolist()) for k in range(len(ids))
                ]
        finally:
            self.model.train(was_training)
        return [rows[i * c.n : (i + 1) * c.n] for i in range(len(records))]

    def _sample(self, ids: list[int], logps: list[float] | None) -> dict[str, Any]:
        end = next((k for k, t in enumerate(ids) if t in self.adapter.end_token_ids), None)
        length = len(ids) if end is None else end + 1
        text = self.adapter.tokenizer.decode(ids[:length], skip_special_tokens=True).strip()
        sample = {"text": text, "tokens": length, "finish": "length" if end is None else "stop"}
        if logps is not None:
            sample.update(token_ids=ids[:length], logprobs=logps[:length])
        return sample


def _token_logps(step_logits: Sequence[Any], ids: Any) -> Any:
    """(rows, steps) log p(sampled token) from generate's raw per-step logits, one step at a time."""
    import torch

    return torch.stack(
        [
            torch.log_softmax(step.float(), dim=-1).gather(-1, ids[:, t, None].to(step.device))[:, 0].cpu()
            for t, step in enumerate(step_logits)
        ],
        dim=1,
    )


class VLLMSampler:
    """vLLM offline inference: the adapter-rendered prompts, their images, one seed per request."""

    def __init__(
        self,
        model: str,
        config: GenerateConfig,
        *,
        adapter: str | None = None,
        family: str | None = None,
        dtype: str = "auto",
        trust_remote_code: bool = False,
        max_images: int = 1,
        max_lora_rank: int = 64,
        **llm_kwargs: Any,
    ):
        if importlib.util.find_spec("vllm") is None:
            raise ImportError(
                "--backend vllm needs the 'vllm' package, which is not installed "
                "(pip install vllm, on a CUDA machine); or use --backend hf"
            )
        from transformers import AutoConfig
        from vllm import LLM

        from mm_unidpo.models import get_adapter  # lazy: torch; judge, pairs, score run without
        from mm_unidpo.models.loading import detect_family, load_processor

        self.config = config
        family = family or detect_family(model, trust_remote_code=trust_remote_code)
        processor = load_processor(model, family, trust_remote_code=trust_remote_code)
        # Only rendering is needed here: the adapter gets the checkpoint's config, not its weights.
        stand_in = types.SimpleNamespace(
            config=AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code), generation_config=None
        )
        self.adapter = get_adapter(stand_in, processor, family=family)
        if adapter:
            llm_kwargs.update(enable_lora=True, max_lora_rank=max_lora_rank)
        if family != "causal_lm":
            llm_kwargs.setdefault("limit_mm_per_prompt", {"image": max_images})
        self.llm = LLM(model=model, dtype=dtype, seed=config.seed, trust_remote_code=trust_remote_code, **llm_kwargs)
        self.lora = None
        if adapter:
            from vllm.lora.request import LoRARequest

            self.lora = LoRARequest("adapter", 1, adapter)

    def render(self, record: PromptRecord) -> str:
        return self.adapter.render_prompt(record)

    def request(self, record: PromptRecord) -> dict[str, Any]:
        """One vLLM input: token ids for a text prompt (so BOS is not added twice); for a prompt with
        images, its text (vLLM expands the image placeholders itself) and the decoded images."""
        text = self.render(record)
        if not record.images:
            return {"prompt_token_ids": self.adapter.tokenize_text(text)}
        bos = self.adapter.tokenizer.bos_token
        if bos and text.startswith(bos):  # vLLM tokenizes the text with special tokens: BOS comes back
            text = text[len(bos) :]
        images = load_record_images(record)
        return {"prompt": text, "multi_modal_data": {"image": images if len(images) > 1 else images[0]}}

    def sample(self, records: Sequence[PromptRecord], seeds: Sequence[int]) -> list[list[dict[str, Any]]]:
        from vllm import SamplingParams

        c = self.config
        params = [
            SamplingParams(
                n=c.n,
                temperature=max(c.temperature, 0.0),
                top_p=c.top_p if c.temperature > 0 else 1.0,
                max_tokens=c.max_new_tokens,
                seed=seed,
                logprobs=0 if c.logprobs else None,
            )
            for seed in seeds
        ]
        outputs = self.llm.generate([self.request(r) for r in records], params, lora_request=self.lora, use_tqdm=False)
        return [[self._sample(o) for o in out.outputs] for out in outputs]

    def _sample(self, output: Any) -> dict[str, Any]:
        ids = list(output.token_ids)
        sample = {
            "text": output.text.strip(),
            "tokens": len(ids),
            "finish": "stop" if output.finish_reason == "stop" else "length",
        }
        if self.config.logprobs:
            sample.update(token_ids=ids, logprobs=[float(step[t].logprob) for t, step in zip(ids, output.logprobs)])
        return sample


def load_sampler(
    model: str,
    config: GenerateConfig,
    *,
    backend: str = "hf",
    adapter: str | None = None,
    family: str | None = None,
    dtype: str = "auto",
    trust_remote_code: bool = False,
) -> Any:
    """A sampler for a model path / hub id (with an optional LoRA adapter)."""
    if backend == "vllm":
        return VLLMSampler(
            model, config, adapter=adapter, family=family, dtype=dtype, trust_remote_code=trust_remote_code
        )
    if backend != "hf":
        raise ValueError(f"unknown backend {backend!r}; expected 'hf' or 'vllm'")
    import torch

    from mm_unidpo.models.loading import load_pretrained  # lazy: torch; judge, pairs, score run without

    loaded, processor = load_pretrained(
        model,
        family=family,
        adapter=adapter,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        device_map="auto" if torch.cuda.is_available() else None,
    )
    return HFSampler(loaded, processor, config, family=family)
