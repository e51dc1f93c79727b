"""Building blocks of `bench_vs_trl.py`: the bench models, the pairs of each scenario, one timed run per side.

Every run is one `transformers.Trainer` loop (ours: `PreferenceTrainer`; TRL: `DPOTrainer`) over
`warmup + steps` micro-batches of `batch` pairs, on the same model (same seed), the same records and the
same LoRA config. A callback stamps `time.perf_counter()` at the end of every step; a forward pre-hook on
the language model counts the tokens of every call (policy and reference) after the warm-up; peak memory
is the process's peak RSS over the timed steps (the mark reset after the warm-up) minus its RSS right before
`train()` (models, LoRA, trainer built).
"""

from __future__ import annotations

import ctypes
import gc
import random
import time
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import TrainerCallback

ARCH = {
    # LLaVA-1.5 proportions, scaled down: CLIP ViT/14 at 336 px (576 image tokens), a Llama LM with
    # head_dim 64, MLP ratio 2.7 and LLaVA's 32k vocabulary.
    "llava": dict(image_size=336, vision=dict(image_size=336, patch_size=14, hidden_size=128, intermediate_size=512,
                                              num_hidden_layers=2, num_attention_heads=4, projection_dim=128),
                  hidden=512, layers=4, heads=8, intermediate=1376, vocab=32064),
    # Qwen2-VL proportions, scaled down: 448 px -> 32x32 patches of 14 -> 2x2 merge -> 256 image tokens.
    "qwen2_vl": dict(image_size=448, vision=dict(depth=2, embed_dim=128, num_heads=4, mlp_ratio=4),
                     hidden=512, layers=4, heads=8, intermediate=1376, vocab=32064),
}
SMOKE = {  # the smallest setting: same code path, toy sizes
    "llava": dict(image_size=112, vision=dict(image_size=112, patch_size=14, hidden_size=32, intermediate_size=64,
                                              num_hidden_layers=1, num_attention_heads=2, projection_dim=32),
                  hidden=64, layers=1, heads=4, intermediate=128, vocab=1024),
    "qwen2_vl": dict(image_size=112, vision=dict(depth=1, embed_dim=32, num_heads=2, mlp_ratio=2),
                     hidden=64, layers=1, heads=4, intermediate=128, vocab=1024),
}
# Pair shapes, in text tokens (the images add their own). "b1": LLaVA-shaped pairs, one image, responses
# of ~150 tokens; "mixed": what real micro-batches hold, 1-2 images and responses of 20-400 tokens.
SHAPES = {
    "b1": dict(prompt=50, response=(140, 160), images=(1, 1)),
    "mixed": dict(prompt=50, response=(20, 400), images=(1, 2)),
}
SMOKE_SHAPES = {
    "b1": dict(prompt=20, response=(13, 19), images=(1, 1)),
    "mixed": dict(prompt=20, response=(4, 40), images=(1, 2)),
}
LORA = dict(r=16, alpha=32, dropout=0.0, target_modules="all-linear")  # every linear layer of the LM


def build(arch: str, smoke: bool = False, seed: int = 0, vocab: int | None = None):
    """(model, processor, spec): random weights, float32, sdpa, identical for a given seed. `vocab` widens
    the LM's vocabulary (embedding and head rows; the tokenizer uses the first ids)."""
    from mm_unidpo.testing import tiny

    spec = dict((SMOKE if smoke else ARCH)[arch])
    if vocab:
        spec["vocab"] = vocab
    text = dict(intermediate_size=spec["intermediate"], num_attention_heads=spec["heads"],
                num_key_value_heads=spec["heads"], max_position_embeddings=4096)
    model, processor = tiny(arch, seed=seed, hidden_size=spec["hidden"], num_hidden_layers=spec["layers"],
                            vocab_size=spec["vocab"], text_config=text, vision_config=dict(spec["vision"]))
    if arch == "qwen2_vl":  # let the image keep its size: (size / 28)^2 merged tokens
        pixels = spec["image_size"] ** 2
        processor.image_processor.size = {"shortest_edge": pixels, "longest_edge": pixels}
        for key in ("min_pixels", "max_pixels"):
            if hasattr(processor.image_processor, key):
                setattr(processor.image_processor, key, pixels)
    model.config.use_cache = False
    return model, processor, spec


def language_model(model) -> torch.nn.Module:
    from mm_unidpo.models import unwrap_model

    return unwrap_model(model).model.language_model


# ---- data ---------------------------------------------------------------------------------------------

def _words() -> list[str]:
    from mm_unidpo.testing.tokenizer import _CORPUS

    return _CORPUS.replace("\n", " ").split()


def _text(tokenizer, rng: random.Random, n_tokens: int) -> str:
    """Corpus words until the text tokenizes to `n_tokens` (at most) with the bench tokenizer."""
    words, out = _words(), []
    while len(tokenizer(" ".join(out), add_special_tokens=False)["input_ids"]) < n_tokens:
        start = rng.randrange(len(words))
        out += words[start:start + 12]
    while len(tokenizer(" ".join(out), add_special_tokens=False)["input_ids"]) > n_tokens:
        out.pop()
    return " ".join(out)


def _image(size: int, rng: random.Random) -> Image.Image:
    g = np.random.default_rng(rng.randrange(1 << 30))
    base = np.linspace(0, 255, size, dtype=np.float32)
    arr = (base[None, :, None] * g.uniform(0.3, 1.0, 3) + g.normal(0, 25, (size, size, 3))).clip(0, 255)
    return Image.fromarray(arr.astype(np.uint8))


def _template_tokens(processor) -> int:
    """Text tokens the chat template (and BOS) add around a one-image question, image tokens excluded."""
    tok = processor.tokenizer
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "x"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tok(text, add_special_tokens=not (tok.bos_token and text.startswith(tok.bos_token)))["input_ids"]
    return len(ids) - 1 - len(tok("x", add_special_tokens=False)["input_ids"])  # one image placeholder


def make_records(processor, n: int, image_size: int, smoke: bool = False, seed: int = 0, scenario: str = "b1",
                 images: int | None = None, response: int | None = None) -> list:
    """`n` pairs of `scenario` (SHAPES): a ~50-token prompt (template included) with its images, chosen and
    rejected responses of independent lengths in the scenario's range (eos included), quality scores (for
    Uni-DPO). `images` / `response` fix the image count / response length (the scaling table)."""
    from mm_unidpo.data import PreferenceRecord

    shape = (SMOKE_SHAPES if smoke else SHAPES)[scenario]
    tok = processor.tokenizer
    question = max(4, shape["prompt"] - _template_tokens(processor))
    rng = random.Random(seed)
    records = []
    for i in range(n):
        k = images or rng.randint(*shape["images"])
        length = lambda: (response or rng.randint(*shape["response"])) - 1  # noqa: E731  (- 1: end of turn)
        records.append(PreferenceRecord(
            prompt="<image>\n" * k + _text(tok, rng, question), chosen=_text(tok, rng, length()),
            rejected=_text(tok, rng, length()), images=[_image(image_size, rng) for _ in range(k)],
            score_chosen=float(rng.randint(6, 10)), score_rejected=float(rng.randint(1, 5)), id=f"bench{i}", index=i))
    return records


def token_counts(adapter, records, image_token_id: int) -> dict[str, float]:
    """Mean image / prompt-text / chosen / rejected token counts, as our adapter encodes them (the bench
    passes the timed records: the samplers are sequential, so the timed steps see exactly these)."""
    sums = dict(image=0, prompt=0, chosen=0, rejected=0)
    for r in records:
        e = adapter.encode(r)
        image = sum(1 for t in e.prompt_ids if t == image_token_id)
        sums["image"] += image
        sums["prompt"] += len(e.prompt_ids) - image
        sums["chosen"] += len(e.chosen_ids)
        sums["rejected"] += len(e.rejected_ids)
    return {k: v / len(records) for k, v in sums.items()}


# ---- instruments ------------------------------------------------------------------------------------

class TokenCounter:
    """Forward pre-hook on the language model: rows x sequence length of every call, while `on`."""

    def __init__(self, module: torch.nn.Module):
        self.on, self.tokens, self.calls = False, 0, 0
        module.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        if not self.on:
            return
        x = kwargs.get("inputs_embeds")
        if x is None:
            x = kwargs.get("input_ids", args[0] if args else None)
        self.tokens += int(x.shape[0] * x.shape[1])
        self.calls += 1


class StepClock(TrainerCallback):
    """perf_counter at the end of every optimizer step; starts the token counter after the warm-up.
    With `flops`, counts the FLOPs of the first (untimed) step: forward, reference, recomputation and
    backward, plus the optimizer's few; deterministic, unlike wall time on a shared machine."""

    def __init__(self, warmup: int, counter: TokenCounter, before_step=None, flops: bool = False):
        self.warmup, self.counter, self.stamps, self.cpu = warmup, counter, [], []
        self.before_step = before_step  # called with the step number (0-based) before each step
        self.flop_mode, self.flops = (flop_counter() if flops else None), None

    def on_step_begin(self, args, state, control, **kwargs):
        if self.before_step is not None:
            self.before_step(state.global_step)
        if self.flop_mode is not None and state.global_step == 0:
            self.flop_mode.__enter__()

    def on_step_end(self, args, state, control, **kwargs):
        if self.flop_mode is not None and state.global_step == 1:
            self.flop_mode.__exit__(None, None, None)
            self.flops = float(self.flop_mode.get_total_flops())
        if state.global_step == self.warmup:
            self.counter.on = True
            # Peak memory counts the timed steps: the warm-up's one-off allocations (and the FLOP counter's
            # bookkeeping, which held twice the step's memory here) are freed and the kernel's mark reset.
            reset_peak_memory()
        self.stamps.append(time.perf_counter())
        self.cpu.append(time.process_time())  # CPU seconds of all threads of this process


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def reset_peak_rss() -> int:
    """Free what can be freed, reset the kernel's peak-RSS mark (VmHWM), return the current RSS (kB)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_kb("VmRSS")


def reset_peak_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    else:
        reset_peak_rss()


def measure(trainer, counter: TokenCounter, clock: StepClock, warmup: int, steps: int, batch: int = 1) -> dict[str, Any]:
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = reset_peak_rss()
    trainer.train()
    if cuda:
        torch.cuda.synchronize()
        peak_mb = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak_mb = (_status_kb("VmHWM") - base) / 1024
    stamps = clock.stamps
    assert len(stamps) == warmup + steps, (len(stamps), warmup, steps)
    elapsed = stamps[-1] - stamps[warmup - 1]
    step_times = [b - a for a, b in zip(stamps[warmup - 1:], stamps[warmup:])]
    cpu_times = [b - a for a, b in zip(clock.cpu[warmup - 1:], clock.cpu[warmup:])]
    counter.on = False
    pairs = steps * batch
    return {"pairs_per_s": pairs / elapsed, "seconds": elapsed, "step_s": step_times, "cpu_step_s": cpu_times,
            "cpu_s_per_pair": sum(cpu_times) / pairs, "peak_mem_mb": peak_mb, "batch": batch,
            # rows x length of every LM call, per pair; and per LM pass (policy, reference) per pair
            "tokens_per_pair": counter.tokens / pairs, "lm_calls_per_step": counter.calls / steps,
            "tokens_per_pass_per_pair": counter.tokens / max(counter.calls, 1) / batch,
            "gflop_per_pair": None if clock.flops is None else clock.flops / 1e9 / batch,
            "memory": "cuda_max_allocated" if cuda else "rss_peak_delta"}


def head_peak_mb(tokens: int, hidden: int, vocab: int, chunk_size: int | None, seed: int = 0) -> float:
    """Peak memory of the LM head alone (forward + backward of the scored tokens' log-probs), chunked
    (`chunk_size`) or materialised (None): peak RSS over RSS before, as `measure`."""
    from mm_unidpo.models.head import token_logps

    torch.manual_seed(seed)
    head = torch.nn.Linear(hidden, vocab, bias=False).requires_grad_(False)  # frozen, as under LoRA
    h = torch.randn(tokens, hidden, requires_grad=True)
    targets = torch.randint(0, vocab, (tokens,))
    token_logps(head, h[:2], targets[:2], chunk_size=chunk_size).sum().backward()  # allocator warm-up
    h.grad = None
    base = reset_peak_rss()
    token_logps(head, h, targets, chunk_size=chunk_size).sum().backward()
    return (_status_kb("VmHWM") - base) / 1024


def _sdpa_cpu_fwd(q, k, v, *args, out_shape=None, **kwargs):
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(q, k, v)


def _sdpa_cpu_bwd(grad, q, k, v, *args, out_shape=None, **kwargs):
    from torch.utils.flop_counter import sdpa_backward_flop_count

    return sdpa_backward_flop_count(grad, q, k, v)


def flop_counter():
    """torch's FlopCounterMode, plus the CPU flash-attention kernels it does not know (full Tq x Tk
    products, masked or not, as torch counts sdpa)."""
    from torch.utils.flop_counter import FlopCounterMode

    aten = torch.ops.aten
    return FlopCounterMode(display=False, custom_mapping={
        aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_fwd,
        aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_cpu_bwd})


def _training_args(cls, out: str, warmup: int, steps: int, checkpointing: bool, batch: int = 1, **extra):
    import inspect

    accepted = set(inspect.signature(cls.__init__).parameters)
    gc_key = "activation_checkpointing" if "activation_checkpointing" in accepted else "gradient_checkpointing"
    kw = {gc_key: checkpointing, gc_key + "_kwargs": {"use_reentrant": False}}
    return cls(output_dir=out, per_device_train_batch_size=batch, gradient_accumulation_steps=1,
               max_steps=warmup + steps, learning_rate=1e-5, lr_scheduler_type="constant", warmup_steps=0,
               logging_steps=10_000, save_strategy="no", report_to="none", disable_tqdm=True, seed=0,
               bf16=False, fp16=False, dataloader_num_workers=0, train_sampling_strategy="sequential",
               use_cpu=not torch.cuda.is_available(),
               **kw, **extra)


def _lora(model):
    from mm_unidpo.train.config import LoraSettings
    from mm_unidpo.train.setup import lora_config

    return lora_config(model, LoraSettings(**LORA))


# ---- the two sides ----------------------------------------------------------------------------------

# Our variants, each adding one thing to the one before: the plain two-row layout; one pair per row with a
# shared prefix under a dense block mask (the layout before padding-free packing); all pairs of the
# micro-batch in one row with per-pair block attention; and the LM head chunked from hidden states.
VARIANTS = {
    "plain": dict(shared_prefix=False, head_chunk_size=None),
    "shared_prefix": dict(pack_pairs=False, head_chunk_size=None, dense_mask=True),
    "packed": dict(head_chunk_size=None),
    "packed_chunked": dict(),
}


def run_ours(arch: str, smoke: bool, records, warmup: int, steps: int, checkpointing: bool, out: str,
             loss: str = "dpo", variant: str = "packed_chunked", batch: int = 1, beta: float = 0.1,
             flops: bool = True, vocab: int | None = None, cycle: tuple[str, ...] = ()) -> dict[str, Any]:
    """Our trainer on `records`. `cycle`: switch the objective before every step, round robin
    (interleaved, so that machine-load drift hits every objective alike); step times come back per objective."""
    from peft import get_peft_model
    from transformers import TrainingArguments

    from mm_unidpo.models import get_adapter
    from mm_unidpo.train.trainer import PreferenceTrainer, RecordDataset

    model, processor, _ = build(arch, smoke, vocab=vocab)
    config = _lora(model)
    if checkpointing:
        model.enable_input_require_grads()  # as mm_unidpo.train.setup.build_models
    model = get_peft_model(model, config)
    options = dict(VARIANTS[variant])
    # dense_mask: the T x T block mask instead of per-pair attention
    options["per_pair_attention"] = not options.pop("dense_mask", False)
    adapter = get_adapter(model, processor, max_length=8192, **options)
    counter = TokenCounter(language_model(model))
    trainer = None

    def switch(step: int) -> None:
        if cycle:
            trainer.loss_name = cycle[step % len(cycle)]
            trainer.loss_params = loss_params(trainer.loss_name, beta)

    clock = StepClock(warmup, counter, before_step=switch, flops=flops)
    args = _training_args(TrainingArguments, out, warmup, steps, checkpointing, batch, remove_unused_columns=False)
    trainer = PreferenceTrainer(model=model, args=args, train_dataset=RecordDataset(records),
                                processing_class=processor, adapter=adapter, loss_name=loss,
                                loss_params=loss_params(loss, beta), callbacks=[clock])
    result = measure(trainer, counter, clock, warmup, steps, batch)
    if cycle:
        for key in ("step_s", "cpu_step_s"):
            result["per_loss_" + key] = {name: [t for i, t in enumerate(result[key])
                                                if cycle[(warmup + i) % len(cycle)] == name] for name in cycle}
    result["counts"] = token_counts(adapter, records[warmup * batch:], processor.tokenizer.convert_tokens_to_ids(
        processor.tokenizer.image_token))
    result["params_total"] = sum(p.numel() for p in model.parameters())
    result["params_trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return result


def loss_params(loss: str, beta: float) -> dict[str, Any]:
    return {} if loss == "unidpo" else {"beta": beta}  # Uni-DPO: its official defaults (beta 2.0, ...)


def loss_only_us(loss: str, beta: float = 0.1, repeats: int = 2000) -> float:
    """Microseconds for the objective alone, forward + backward, on one pair's log-probs (with scores)."""
    from mm_unidpo.losses import PairLogps, preference_loss

    leaf = [torch.tensor([-300.0 - i], requires_grad=True) for i in range(2)]
    fixed = dict(chosen_lengths=torch.tensor([150]), rejected_lengths=torch.tensor([150]),
                 reference_chosen=torch.tensor([-301.0]), reference_rejected=torch.tensor([-299.0]),
                 score_chosen=torch.tensor([8.0]), score_rejected=torch.tensor([3.0]))
    params = loss_params(loss, beta)
    for k in range(repeats + 50):
        if k == 50:
            start = time.perf_counter()
        out = preference_loss(loss, PairLogps(policy_chosen=leaf[0] * 1, policy_rejected=leaf[1] * 1, **fixed),
                              **params)
        out.loss.backward()
    return (time.perf_counter() - start) / repeats * 1e6


def trl_dataset(records):
    from datasets import Dataset

    rows = {"images": [], "prompt": [], "chosen": [], "rejected": []}
    for r in records:
        question = r.prompt.replace("<image>", "").strip()
        rows["images"].append(list(r.images))
        content = [{"type": "image"}] * len(r.images) + [{"type": "text", "text": question}]
        rows["prompt"].append([{"role": "user", "content": content}])
        rows["chosen"].append([{"role": "assistant", "content": [{"type": "text", "text": r.chosen}]}])
        rows["rejected"].append([{"role": "assistant", "content": [{"type": "text", "text": r.rejected}]}])
    return Dataset.from_dict(rows)


def run_trl(arch: str, smoke: bool, records, warmup: int, steps: int, checkpointing: bool, out: str,
            compact_head: bool = False, batch: int = 1, beta: float = 0.1, flops: bool = True,
            vocab: int | None = None) -> dict[str, Any]:
    import trl.trainer.utils as trl_utils
    from trl import DPOConfig, DPOTrainer

    if compact_head:  # score completion positions only, as TRL does on CUDA/XPU (Triton); CPU scores all
        trl_utils._use_triton = lambda device: True
    model, processor, _ = build(arch, smoke, vocab=vocab)
    config = _lora(model)
    counter = TokenCounter(language_model(model))
    clock = StepClock(warmup, counter, flops=flops)
    args = _training_args(DPOConfig, out, warmup, steps, checkpointing, batch, beta=beta, loss_type=["sigmoid"],
                          max_length=None, disable_dropout=True)
    # peft_config (not a PeftModel): TRL wraps the model itself and, with ref_model=None, computes the
    # reference with the adapter disabled -- exactly our setup. (A PeftModel passed in would get a "ref" copy.)
    trainer = DPOTrainer(model=model, ref_model=None, args=args, train_dataset=trl_dataset(records),
                         processing_class=processor, peft_config=config, callbacks=[clock])
    assert trainer.ref_model is None and "ref" not in trainer.model.peft_config
    return measure(trainer, counter, clock, warmup, steps, batch)
