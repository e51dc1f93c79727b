"""Response log-probs from final hidden states, without the full-vocabulary logits.

A preference step needs log p(token) at a few thousand scored positions, each a log-softmax over the
vocabulary (32k for Llama, 152k for Qwen). Materialising those logits costs scored tokens × vocab
floats, twice over with their float32 copy, plus the same again for the gradient. Here, while the model
runs, its LM head's call picks the scored positions from the final hidden states (`scored_head`), and
`token_logps` projects only those onto the vocabulary, `chunk_size` rows at a time, in a
custom autograd function: the forward keeps the hidden states and one log-sum-exp per token, the
backward recomputes each chunk's logits and applies the per-token upstream gradient

    ∂ log p(y) / ∂ z = onehot(y) − softmax(z),   z = h Wᵀ (+ b),

so the head's peak memory is O(chunk × vocab) instead of O(scored tokens × vocab) (the idea of the
fused linear-cross-entropy kernels, e.g. Liger's, for a per-token log-prob instead of a mean loss).
The default chunk ("auto") is sized as Liger sizes its chunks, chunk × vocab ≈ tokens × hidden (the head
holds about as much as the hidden states it projects), but never under 256 rows: on a CPU, smaller
matmuls against the whole weight cost several times the materialised head's time.
Values and gradients equal the materialised `log_softmax(head(h))[y]` up to float32 rounding; the
matmul runs in the dtype autocast gives the head (as the model's own head would) and the softmax in
float32.

A trained head: a plain `nn.Linear` head whose weight requires grad (full fine-tuning, tied
embeddings) gets its weight (and bias) gradient from the same chunked backward. Any other head module
(a LoRA-wrapped or `modules_to_save` head, a head followed by logit soft-capping or scaling) is called
as it is on the scored hidden states: correct, but materialised (logged once).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .utils import unwrap_model

logger = logging.getLogger(__name__)
DEFAULT_CHUNK_SIZE = "auto"
# config attributes of models whose forward changes the head's output (soft-capping, scaling): our scored
# head would feed that transform our log-probs, so those models keep their head (see `scored_head`)
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling")
_warned: set[str] = set()


class _ChunkedTokenLogps(torch.autograd.Function):
    """log_softmax(hidden @ weightᵀ + bias)[targets], `chunk` rows at a time (see the module doc)."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk: int, dtype, side: dict | None = None):
        logps = torch.empty(hidden.shape[0], dtype=torch.promote_types(dtype, torch.float32), device=hidden.device)
        lse = torch.empty_like(logps)
        sq = torch.empty_like(logps) if side is not None else None
        w, b = _cast(weight, bias, dtype)
        for s in range(0, hidden.shape[0], chunk):
            logits = _logits(hidden[s : s + chunk], w, b)
            lse[s : s + chunk] = logits.logsumexp(-1)
            logps[s : s + chunk] = logits.gather(-1, targets[s : s + chunk, None]).squeeze(-1) - lse[s : s + chunk]
            if sq is not None:  # log Σ_v p(v)² = logsumexp(2z) − 2·lse, no gradient (WPO's weights are constants)
                sq[s : s + chunk] = (2 * logits).logsumexp(-1) - 2 * lse[s : s + chunk]
        if side is not None:
            side["log_sum_sq"] = sq
        ctx.save_for_backward(hidden, weight, bias, targets, lse)
        ctx.chunk, ctx.dtype = chunk, dtype
        return logps

    @staticmethod
    def backward(ctx, grad):
        hidden, weight, bias, targets, lse = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = torch.empty_like(hidden)  # each filled only where its input needs a gradient
        acc = lse.dtype  # float32 accumulation of the weight gradient over chunks (float64 for a float64 head)
        grad_w = torch.zeros(weight.shape if need_w else (0,), dtype=acc, device=weight.device)
        grad_b = torch.zeros(bias.shape if need_b else (0,), dtype=acc, device=weight.device)
        w, b = _cast(weight, bias, ctx.dtype)
        for s in range(0, hidden.shape[0], ctx.chunk):
            h, g = hidden[s : s + ctx.chunk], grad[s : s + ctx.chunk].to(lse.dtype)
            # dz = g · (onehot(y) − softmax(z)), in place on the recomputed logits
            dz = _logits(h, w, b).sub_(lse[s : s + ctx.chunk, None]).exp_().mul_(-g[:, None])
            dz.scatter_add_(-1, targets[s : s + ctx.chunk, None], g[:, None])
            dz = dz.to(ctx.dtype)
            if need_h:
                grad_h[s : s + ctx.chunk] = (dz @ w).to(hidden.dtype)
            if need_w:
                grad_w += (dz.t() @ h.to(ctx.dtype)).to(acc)
            if need_b:
                grad_b += dz.to(acc).sum(0)
        return (
            grad_h if need_h else None,
            grad_w.to(weight.dtype) if need_w else None,
            grad_b.to(bias.dtype) if need_b else None,
            None,
            None,
            None,
            None,
        )


def _cast(weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype):
    return weight.to(dtype), bias.to(dtype) if bias is not None else None


def _logits(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """float32 logits (float64 for a float64 head: gradcheck)."""
    logits = F.linear(hidden.to(weight.dtype), weight, bias)
    return logits if logits.dtype == torch.float64 else logits.float()


MIN_AUTO_ROWS = 256  # smaller matmuls against the whole (vocab × hidden) weight lose more time than they save


def chunk_rows(chunk_size: int | str, tokens: int, hidden: int, vocab: int) -> int:
    """Rows per chunk: `chunk_size`, or for "auto" the power of two with chunk × vocab ≈ tokens × hidden
    (at least MIN_AUTO_ROWS)."""
    if chunk_size != "auto":
        return max(1, int(chunk_size))
    per_row = -(-vocab // max(hidden, 1))  # ceil(vocab / hidden)
    return max(MIN_AUTO_ROWS, 1 << max(0, (-(-max(tokens, 1) // per_row) - 1).bit_length()))


def is_plain_linear(head: Any) -> bool:
    """A head whose forward is `nn.Linear`'s own (FSDP's wrapper class of one too): its weight and bias say
    everything. A LoRA-wrapped, `modules_to_save` or quantised head is called instead."""
    return isinstance(head, torch.nn.Linear) and type(head).forward is torch.nn.Linear.forward


def token_logps(
    head: torch.nn.Module,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    *,
    chunk_size: int | str | None = DEFAULT_CHUNK_SIZE,
    call: Any = None,
    side: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """log p(targets[i] | hidden[i]) under the LM `head` for (N, d) hidden states: (N,) float32 (float64
    heads: float64).

    `chunk_size=None` (or a head that is not a plain ``nn.Linear``) materialises the logits, through
    `call` (default: the head): the reference path. With a `side` dict, ``side["log_sum_sq"]`` gets
    log Σ_v p(v | hidden[i])² per row, without gradient (WPO's weights)."""
    weight = getattr(head, "weight", None)
    hidden = hidden.to(weight.device) if isinstance(weight, torch.Tensor) else hidden
    targets = targets.to(hidden.device)
    if chunk_size is None or not is_plain_linear(head):
        if chunk_size is not None and type(head).__name__ not in _warned:
            _warned.add(type(head).__name__)
            logger.info(
                "LM head %s is not a plain Linear (LoRA or modules_to_save on it): its logits are "
                "materialised on the scored positions",
                type(head).__name__,
            )
        logits = (call or head)(hidden)
        logits = logits if logits.dtype == torch.float64 else logits.float()
        if side is not None:
            side["log_sum_sq"] = log_sum_sq_probs(logits)
        return logits.gather(-1, targets[:, None]).squeeze(-1) - logits.logsumexp(-1)
    assert isinstance(head, torch.nn.Linear)  # is_plain_linear
    device_type = hidden.device.type
    dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else head.weight.dtype
    rows = chunk_rows(chunk_size, hidden.shape[0], head.in_features, head.out_features)
    with torch.autocast(device_type, enabled=False):
        return _ChunkedTokenLogps.apply(hidden, head.weight, head.bias, targets, rows, dtype, side)


@torch.no_grad()
def log_sum_sq_probs(logits: torch.Tensor) -> torch.Tensor:
    """log Σ_v softmax(z)_v² per row of logits (TRL's `log_sum_sq_probs` per token)."""
    return (2 * logits).logsumexp(-1) - 2 * logits.logsumexp(-1)


@torch.no_grad()
def token_logps_and_argmax(
    head: torch.nn.Module,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    *,
    chunk_size: int | str | None = DEFAULT_CHUNK_SIZE,
    call: Any = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """As `token_logps` (no gradient), plus whether each target is the head's argmax (greedy) token."""
    weight = getattr(head, "weight", None)
    chunk = (
        hidden.shape[0]
        if chunk_size is None or weight is None
        else chunk_rows(chunk_size, hidden.shape[0], weight.shape[1], weight.shape[0])
    )
    logps, greedy = [], []
    for s in range(0, hidden.shape[0], max(chunk, 1)):
        logits = (call or head)(
            hidden[s : s + chunk].to(weight.device if weight is not None else hidden.device)
        ).float()
        t = targets[s : s + chunk, None].to(logits.device)
        logps.append(logits.gather(-1, t).squeeze(-1) - logits.logsumexp(-1))
        greedy.append(logits.argmax(-1) == t.squeeze(-1))
    if not logps:
        empty = torch.empty(0, device=hidden.device)
        return empty, empty.bool()
    return torch.cat(logps), torch.cat(greedy)


def keeps_its_head(model: Any) -> bool:
    """Whether the model's forward transforms the head's output (soft-capping, scaling), so it must keep it."""
    config = getattr(unwrap_model(model), "config", None)
    configs = [config, getattr(config, "text_config", None)]
    return any(
        getattr(c, name, None) not in (None, 1, 1.0) for c in configs if c is not None for name in LOGIT_TRANSFORMS
    )


@dataclass
class ScoredHead:
    """What `scored_head` computed during the forward: log p(targets), and with `greedy` the hits."""

    logps: torch.Tensor | None = None
    greedy: torch.Tensor | None = None
    log_sum_sq: torch.Tensor | None = None  # with `log_sum_sq=True`: log Σ_v p(v)² per scored position


@contextmanager
def scored_head(
    model: Any,
    rows: torch.Tensor,
    predictors: torch.Tensor,
    targets: torch.Tensor,
    *,
    chunk_size: int | str | None,
    greedy: bool = False,
    log_sum_sq: bool = False,
) -> Iterator[ScoredHead]:
    """While active, the model's ``lm_head`` computes log p(targets) from the final hidden states at
    (rows, predictors) of its input, instead of logits for every position (what the model then returns
    as ``.logits`` is these (N,) log-probs; they are also in the yielded `ScoredHead`).

    The head is called by the model, in its own forward: whatever gathers a sharded weight for that call
    (FSDP's unshard, ZeRO-3's gather, accelerate's offload hooks) has gathered it, and the backward of
    the model's output re-gathers it, so the chunked backward never sees a shard. The module itself stays
    in place (only its instance ``forward`` is shadowed), so wrappers that hold it are undisturbed."""
    base = unwrap_model(model)
    head = getattr(base, "lm_head", None)
    if head is None:
        raise TypeError(f"{type(base).__name__} has no lm_head: cannot compute log-probs from hidden states")
    if keeps_its_head(model):
        raise TypeError(f"{type(base).__name__} transforms its logits after the head ({', '.join(LOGIT_TRANSFORMS)})")
    out = ScoredHead()
    own = head.__dict__.get("forward")  # an instance forward of a hook library, if any: kept underneath
    inner = head.forward

    def forward(hidden: torch.Tensor) -> torch.Tensor:
        picked = hidden[rows, predictors]
        if greedy:
            out.logps, out.greedy = token_logps_and_argmax(head, picked, targets, chunk_size=chunk_size, call=inner)
        else:
            side: dict[str, torch.Tensor] | None = {} if log_sum_sq else None
            out.logps = token_logps(head, picked, targets, chunk_size=chunk_size, call=inner, side=side)
            out.log_sum_sq = side["log_sum_sq"] if side is not None else None
        return out.logps

    head.forward = forward
    try:
        yield out
    finally:
        if own is None:
            del head.forward
        else:
            head.forward = own
