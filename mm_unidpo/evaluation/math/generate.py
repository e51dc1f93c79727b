"""Generation backends: batched transformers ``generate`` (default) and vLLM (when installed).

Both take prompt strings and return ``n`` completions per prompt. Greedy decoding unless
``temperature > 0``; ``n > 1`` needs sampling (greedy samples would all be identical).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SamplingConfig:
    """Decoding settings shared by the backends."""

    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 1024

    def __post_init__(self) -> None:
        if self.n < 1 or self.max_new_tokens < 1:
            raise ValueError("n and max_new_tokens must be >= 1")
        if self.n > 1 and self.temperature <= 0:
            raise ValueError("n > 1 needs sampling: set a temperature > 0 (e.g. 0.6)")

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """The text before the first stop string (generation may run past it inside a batch)."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=len(text))
    return text[:cut]


@contextmanager
def left_padding(tokenizer: Any) -> Iterator[None]:
    """Decoder-only models need left padding so every row's last position is a real token."""
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        yield
    finally:
        tokenizer.padding_side = side


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    ids: list[int] = []
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (gen_eos, tokenizer.eos_token_id):
        for i in value if isinstance(value, (list, tuple)) else [value]:
            if i is not None and i not in ids:
                ids.append(int(i))
    return ids


class HFGenerator:
    """Batched ``model.generate`` with left padding; a batch is one call of :meth:`generate`."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        if tokenizer.pad_token_id is None:  # e.g. Llama base tokenizers: pad with EOS (masked anyway)
            tokenizer.pad_token = tokenizer.eos_token

    def generate(
        self,
        prompts: list[str],
        *,
        add_special_tokens: bool,
        sampling: SamplingConfig,
        stop: Sequence[str] = (),
        seed: int = 0,
    ) -> list[list[str]]:
        import torch

        tok = self.tokenizer
        with left_padding(tok):
            enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=add_special_tokens)
        device = next(self.model.parameters()).device
        enc = {k: v.to(device) for k, v in enc.items()}
        kwargs: dict[str, Any] = {
            "max_new_tokens": sampling.max_new_tokens,
            "num_return_sequences": sampling.n,
            "pad_token_id": tok.pad_token_id,
            "eos_token_id": _eos_ids(self.model, tok),
        }
        if sampling.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=None)
        if stop:
            kwargs.update(stop_strings=list(stop), tokenizer=tok)
        torch.manual_seed(seed)
        with torch.inference_mode():
            out = self.model.generate(**enc, **kwargs)
        texts = tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        texts = [cut_at_stop(t, stop) for t in texts]
        n = sampling.n
        return [texts[i * n : (i + 1) * n] for i in range(len(prompts))]


class VLLMGenerator:
    """vLLM offline inference for a model path / hub id, with an optional LoRA adapter."""

    def __init__(
        self,
        model: str,
        *,
        adapter: str | None = None,
        dtype: str = "auto",
        seed: int = 0,
        max_lora_rank: int = 64,
        **llm_kwargs: Any,
    ) -> None:
        if importlib.util.find_spec("vllm") is None:
            raise ImportError(
                "--backend vllm needs the 'vllm' package, which is not installed "
                "(pip install vllm, on a CUDA machine); or use --backend hf"
            )
        from vllm import LLM

        if adapter:
            llm_kwargs.update(enable_lora=True, max_lora_rank=max_lora_rank)
        self.llm = LLM(model=model, dtype=dtype, seed=seed, **llm_kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.lora = None
        if adapter:
            from vllm.lora.request import LoRARequest

            self.lora = LoRARequest("adapter", 1, adapter)

    def generate(
        self,
        prompts: list[str],
        *,
        add_special_tokens: bool,
        sampling: SamplingConfig,
        stop: Sequence[str] = (),
        seed: int = 0,
    ) -> list[list[str]]:
        from vllm import SamplingParams

        params = SamplingParams(
            n=sampling.n,
            temperature=max(sampling.temperature, 0.0),
            top_p=1.0 if sampling.greedy else sampling.top_p,
            max_tokens=sampling.max_new_tokens,
            stop=list(stop) or None,
            seed=seed,
        )
        # Token ids, not text: vLLM would add BOS again to a chat-templated prompt.
        inputs = [
            {"prompt_token_ids": self.tokenizer(p, add_special_tokens=add_special_tokens)["input_ids"]} for p in prompts
        ]
        outputs = self.llm.generate(inputs, params, lora_request=self.lora, use_tqdm=False)
        return [[cut_at_stop(o.text, stop) for o in out.outputs] for out in outputs]
