"""Log-probs from hidden states with the chunked LM head (models/head.py): values and gradients equal the
materialised log-softmax, float64 gradcheck, a trained head (full fine-tuning, tied embeddings, LoRA on
the head), autocast, and peak memory O(chunk × vocab)."""

from __future__ import annotations

import pytest
import torch

from mm_unidpo.models import get_adapter
from mm_unidpo.models.head import _ChunkedTokenLogps, scored_head, token_logps
from mm_unidpo.testing import tiny

from .helpers import one_thread  # noqa: F401  (an autouse fixture: importing it applies it to this module)
from .test_models_packed import _records


def _materialised(head, hidden, targets):
    return torch.log_softmax(head(hidden).double(), -1).gather(-1, targets[:, None]).squeeze(-1)


@pytest.mark.parametrize("chunk", [1, 7, 64, None])
@pytest.mark.parametrize("bias", [False, True])
def test_values_and_gradients_equal_the_materialised_head(chunk, bias):
    torch.manual_seed(0)
    head = torch.nn.Linear(24, 301, bias=bias)
    hidden = torch.randn(53, 24, requires_grad=True)
    targets = torch.randint(0, 301, (53,))
    upstream = torch.randn(53)
    ours = token_logps(head, hidden, targets, chunk_size=chunk)
    assert ours.dtype == torch.float32 and ours.shape == (53,)
    params = [hidden, head.weight] + ([head.bias] if bias else [])
    grads = torch.autograd.grad((ours * upstream).sum(), params)
    reference = _materialised(head, hidden, targets)
    ref_grads = torch.autograd.grad((reference * upstream.double()).sum(), params)
    torch.testing.assert_close(ours.double(), reference, rtol=1e-5, atol=2e-5)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g.double(), r.double(), rtol=1e-4, atol=1e-5)


def test_float64_gradcheck():
    torch.manual_seed(1)
    head = torch.nn.Linear(6, 13).double()
    hidden = torch.randn(9, 6, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 13, (9,))
    assert torch.autograd.gradcheck(
        lambda h, w, b: _ChunkedTokenLogps.apply(h, w, b, targets, 4, torch.float64), (hidden, head.weight, head.bias))


def test_autocast_bf16_matches_the_models_own_bf16_head():
    torch.manual_seed(2)
    head = torch.nn.Linear(32, 500, bias=False)
    hidden = torch.randn(40, 32, requires_grad=True)
    targets = torch.randint(0, 500, (40,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = token_logps(head, hidden, targets, chunk_size=16)
        reference = token_logps(head, hidden, targets, chunk_size=None)  # head(h) in bf16, then float32
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5)
    g1 = torch.autograd.grad(ours.sum(), hidden)[0]
    g2 = torch.autograd.grad(reference.sum(), hidden)[0]
    torch.testing.assert_close(g1, g2, rtol=1e-2, atol=1e-3)  # bf16 matmuls in both backwards


@pytest.mark.parametrize("family", ["causal_lm", "llava"])
def test_trained_lm_head_gets_its_gradient(family):
    """Full fine-tuning (the head trained; tied to the embeddings for causal_lm's tiny Llama if tied): the
    chunked path gives the head the materialised path's gradient."""
    model, processor = tiny(family)
    model.train()
    records = _records(text_only=family == "causal_lm")[:2] if family == "causal_lm" else [_records(False)[0]]
    results = []
    for chunk in (8, None):
        model.zero_grad()
        adapter = get_adapter(model, processor, head_chunk_size=chunk)
        out = adapter.sequence_logps(model, adapter.collate(records))
        (out.chosen_logps.sum() - out.rejected_logps.sum()).backward()
        results.append((out.chosen_logps.detach(), model.lm_head.weight.grad.clone()))
    assert results[0][1].abs().sum() > 0
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-4, atol=1e-6)


def test_lora_on_the_lm_head_is_materialised_and_correct(caplog):
    from peft import LoraConfig, get_peft_model

    model, processor = tiny("causal_lm")
    model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["lm_head", "q_proj"],
                                             init_lora_weights=False))
    records = _records(text_only=True)[:2]
    runs = []
    for chunk in (8, None):
        model.zero_grad()
        adapter = get_adapter(model, processor, head_chunk_size=chunk)
        with caplog.at_level("INFO", logger="mm_unidpo.models.head"):
            out = adapter.sequence_logps(model, adapter.collate(records))
        out.chosen_logps.sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        runs.append((out.chosen_logps.detach(), grads))
    assert any("lm_head" in n for n in runs[0][1])
    torch.testing.assert_close(runs[0][0], runs[1][0])
    for name in runs[0][1]:
        torch.testing.assert_close(runs[0][1][name], runs[1][1][name], msg=name)


def test_scored_head_runs_inside_the_heads_call_restores_it_and_refuses_transformed_logits():
    """The head module stays in place (wrappers holding it are undisturbed): only its call is shadowed while
    active, and what the model returns is the scored log-probs, equal to the materialised head's."""
    model, _ = tiny("causal_lm")
    head, calls = model.lm_head, []
    handle = head.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape))  # e.g. FSDP's unshard
    ids = torch.tensor([[3, 4, 5, 6]])
    rows, predictors, targets = torch.tensor([0, 0]), torch.tensor([1, 2]), torch.tensor([5, 6])
    with scored_head(model, rows, predictors, targets, chunk_size=1) as out:
        assert model.lm_head is head
        returned = model(input_ids=ids).logits
    handle.remove()
    assert calls == [(1, 4, model.config.hidden_size)] and "forward" not in head.__dict__
    full = torch.log_softmax(model(input_ids=ids).logits.float(), -1)[0, [1, 2], [5, 6]]
    torch.testing.assert_close(out.logps, full)
    assert returned is out.logps
    model.config.final_logit_softcapping = 30.0
    with pytest.raises(TypeError, match="transforms its logits"):
        with scored_head(model, rows, predictors, targets, chunk_size=1):
            pass
    # ...and the adapter falls back to the model's own (soft-capped) head for such a model
    from mm_unidpo.models.head import keeps_its_head

    assert keeps_its_head(model)


def test_the_models_returned_output_carries_the_gradient():
    """A wrapper may hook the head's output into the backward (DeepSpeed ZeRO-3 replaces it with a tensor whose
    backward re-gathers the weight first): the log-probs used are what the model returned, so that hook runs."""
    model, processor = tiny("causal_lm")
    seen = []

    class Regather(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, grad):
            seen.append(grad.shape)
            return grad

    handle = model.lm_head.register_forward_hook(lambda module, args, output: Regather.apply(output))
    adapter = get_adapter(model, processor)
    out = adapter.sequence_logps(model, adapter.collate(_records(text_only=True)[:2]))
    out.chosen_logps.sum().backward()
    handle.remove()
    assert seen == [(int(out.chosen_lengths.sum() + out.rejected_lengths.sum()),)]


_PEAK_SCRIPT = """
import sys, torch
torch.manual_seed(3)
vocab, d, n, chunk = 152_064, 16, 512, int(sys.argv[1]) or None
head = torch.nn.Linear(d, vocab, bias=False)
hidden = torch.randn(n, d, requires_grad=True)
targets = torch.randint(0, vocab, (n,))
from mm_unidpo.models.head import token_logps
token_logps(head, hidden[:2], targets[:2], chunk_size=chunk).sum().backward()  # warm up the allocator
hidden.grad = None; head.weight.grad = None
def rss(field):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(field)) * 1024
open("/proc/self/clear_refs", "w").write("5")  # resets the peak (VmHWM) to the current resident size
before = rss("VmRSS:")
token_logps(head, hidden, targets, chunk_size=chunk).sum().backward()
print(rss("VmHWM:") - before)
"""


def test_peak_memory_is_chunk_times_vocab():
    """Qwen2-VL's 152k vocabulary, 512 scored tokens, forward + backward, each in its own process (peak RSS
    over RSS before, the peak reset just before): the materialised log-softmax holds tokens × vocab floats several times over, the
    chunked one a few chunk × vocab buffers."""
    import subprocess
    import sys

    def peak(chunk: int) -> int:
        out = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, str(chunk)], capture_output=True, text=True,
                             check=True, env={"OMP_NUM_THREADS": "1", "PATH": ""})
        return int(out.stdout.split()[-1])

    vocab, n, chunk = 152_064, 512, 64
    materialised, chunked = peak(0), peak(chunk)
    assert materialised > 2 * n * vocab * 4  # logits and their float32 softmax/gradient
    assert chunked < 0.25 * materialised
    assert chunked < 8 * chunk * vocab * 4 + 3 * vocab * 16 * 4  # chunk buffers + the weight's gradient


def test_auto_chunk_holds_about_the_hidden_states():
    from mm_unidpo.models.head import MIN_AUTO_ROWS, chunk_rows

    for tokens, hidden, vocab in ((30000, 4096, 152064), (3400, 512, 152064), (300, 512, 32064), (5, 64, 1000)):
        rows = chunk_rows("auto", tokens, hidden, vocab)
        assert rows & (rows - 1) == 0 and rows >= MIN_AUTO_ROWS  # a power of two, not too small a matmul
        assert rows == MIN_AUTO_ROWS or rows * vocab <= 2 * tokens * hidden  # at most ~2x the hidden states
    assert chunk_rows("auto", 30000, 4096, 152064) == 1024 and chunk_rows(7, 10, 8, 100) == 7
