"""A process reward model for math (Qwen2.5-Math-PRM conventions), scored the official Uni-DPO way.

    mm-unidpo judge samples.jsonl --judge prm --model Qwen/Qwen2.5-Math-PRM-7B --trust-remote-code \\
        --judge-arg benchmark=gsm8k --out scored.jsonl

As the Qwen2.5-Math-PRM model card prescribes: the response is split into steps at blank lines ("\\n\\n"),
the steps are joined with the step separator `<extra_0>` and one more closes the last step; the
conversation is system (the CoT instruction), user (the question), assistant (the separated steps),
rendered by the PRM's chat template. The model's 2-class token-classification logits at the separator
positions give each step's reward, P(positive) = softmax(logits)[1]. The judgement's score is
10 × the minimum step reward (the official Uni-DPO math recipe, a 0-10 scale), with the step rewards.

Correctness (optional): with `benchmark=` (gsm8k, math500, ...) the record's gold answer (its `answer` /
`solution` field, read as `mm-unidpo eval math` reads that benchmark's gold) is compared with the answer
extracted from the response by the math grader (`extract_answer`, `is_equivalent`); `correct` is added.

Loading: a checkpoint with a custom model class (Qwen2.5-Math-PRM's `auto_map`) loads through `AutoModel`
and runs its code only with `--trust-remote-code`; anything else loads as `AutoModelForTokenClassification`
and must have 2 labels. A checkpoint whose head weights are missing is refused (a random head would score).
"""

from __future__ import annotations

import logging
from typing import Any

from mm_unidpo.evaluation.math.benchmarks import COT_INSTRUCTION, check_benchmark, gold_answer
from mm_unidpo.evaluation.math.extract import extract_answer
from mm_unidpo.evaluation.math.grade import is_equivalent
from mm_unidpo.evaluation.math.worker import shared_worker
from mm_unidpo.model_source import check_model_source

from .base import Judge, Judgement
from .scorers import text_messages

logger = logging.getLogger(__name__)

STEP_SEPARATOR = "<extra_0>"
STEP_SPLIT = "\n\n"
SCALE = 10.0


def split_steps(response: str, split: str = STEP_SPLIT) -> list[str]:
    """The non-empty steps of a response (Qwen2.5-Math-Instruct writes one per paragraph)."""
    return [step.strip() for step in response.split(split) if step.strip()]


def prm_messages(question: str, steps: list[str], system: str, separator: str = STEP_SEPARATOR) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": question},
        {"role": "assistant", "content": separator.join(steps) + separator},
    ]


def step_rewards(logits: Any, input_ids: Any, separator_id: int) -> list[list[float]]:
    """Per row: P(positive) (softmax over the 2 labels, index 1) at every separator position."""
    import torch

    probs = torch.softmax(logits.float(), dim=-1)[..., 1]
    return [probs[row][input_ids[row] == separator_id].tolist() for row in range(input_ids.shape[0])]


def load_prm(
    name_or_path: str, *, dtype: str | None = None, device: str | None = None, trust_remote_code: bool = False
) -> tuple[Any, Any]:
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForTokenClassification, AutoTokenizer

    check_model_source(name_or_path)  # a wrong local path says so, not "Repo id must be in the form ..."
    config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    custom = "AutoModel" in (getattr(config, "auto_map", None) or {})
    if custom and not trust_remote_code:
        raise ValueError(
            f"{name_or_path} defines its own model class (auto_map: {config.auto_map['AutoModel']}); "
            "its code runs only with --trust-remote-code"
        )
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or ("bfloat16" if device.startswith("cuda") else "float32")
    auto = AutoModel if custom else AutoModelForTokenClassification
    model, info = auto.from_pretrained(
        name_or_path, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code, output_loading_info=True
    )
    if info.get("missing_keys"):
        raise ValueError(
            f"{name_or_path}: no weights for {sorted(info['missing_keys'])[:4]} -- not a process "
            "reward model checkpoint for this class (a random head would score)"
        )
    if not custom and model.config.num_labels != 2:
        raise ValueError(f"{name_or_path} has {model.config.num_labels} labels; a PRM needs 2 (negative, positive)")
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device).eval(), tokenizer


def prm_judge(
    model: str,
    system: str | None = None,
    benchmark: str | None = None,
    batch_size: int = 4,
    max_length: int = 4096,
    device: str | None = None,
    dtype: str | None = None,
    trust_remote_code: bool = False,
    split: str = STEP_SPLIT,
    separator: str = STEP_SEPARATOR,
    grading_timeout: float | None = 10.0,
    share_prompt: bool = True,
) -> Judge:
    """The PRM judge of the module doc (`system` defaults to the Qwen2.5-Math CoT instruction). The
    responses to one question are scored from one prefill of their common start (`share_prompt`; False:
    one forward per response, the reference path)."""
    import torch

    from mm_unidpo.models import pad_rows  # lazy: torch; judge, pairs, score run without

    from .shared_prompt import cache_argument, shared_prefix_forwards  # lazy: torch, as above

    if benchmark is not None:
        check_benchmark(benchmark)
    prm, tokenizer = load_prm(model, dtype=dtype, device=device, trust_remote_code=bool(trust_remote_code))
    separator_id = tokenizer.convert_tokens_to_ids(separator)
    if separator_id is None or separator_id == tokenizer.unk_token_id:
        raise ValueError(f"{model}: its tokenizer has no step separator token {separator!r}")
    system = COT_INSTRUCTION if system is None else system
    device = next(prm.parameters()).device

    def encode(record: Any, response: str) -> tuple[list[int], int, bool]:
        question = text_messages(record, "")[-2]["content"]  # the (last) user turn, image placeholders dropped
        steps = split_steps(response, split)
        text = tokenizer.apply_chat_template(prm_messages(question, steps, system, separator), tokenize=False)
        bos = tokenizer.bos_token
        ids = tokenizer(text, add_special_tokens=not (bos and text.startswith(bos)))["input_ids"]
        return ids[:max_length], len(steps), len(ids) > max_length

    def rewards_one_by_one(encoded: list[tuple[list[int], int, bool]]) -> list[list[float]]:
        """Step rewards of every encoded response, one forward each (in padded batches): the reference path."""
        rewards: list[list[float]] = [[] for _ in encoded]
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i][0]))  # similar lengths share a batch
        for start in range(0, len(order), int(batch_size)):
            rows = order[start : start + int(batch_size)]
            ids, mask = pad_rows([encoded[i][0] for i in rows], tokenizer.pad_token_id)
            with torch.no_grad():
                out = prm(input_ids=ids.to(device), attention_mask=mask.to(device))
            # Padding is never the separator, so only real separator positions are read.
            for i, values in zip(rows, step_rewards(_logits(out, model).cpu(), ids, separator_id)):
                rewards[i] = values
        return rewards

    def rewards_shared(items: list[tuple[Any, str]], encoded: list[tuple[list[int], int, bool]]) -> list[list[float]]:
        """The same from one prefill per question of its responses' common start (`shared_prompt.py`)."""
        ids = [e[0] for e in encoded]
        # The prefix ends before the first separator of every response (or its last token: none to read).
        first = [row.index(separator_id) if separator_id in row else len(row) - 1 for row in ids]
        keys = [text_messages(record, "")[-2]["content"] for record, _ in items]
        rewards: list[list[float]] = [[] for _ in encoded]
        pad = tokenizer.pad_token_id
        for rows, suffixes, out in shared_prefix_forwards(prm, ids, keys, first, pad, int(batch_size)):
            suffix_ids, _ = pad_rows(suffixes, pad)
            for i, values in zip(rows, step_rewards(_logits(out, model).cpu(), suffix_ids, separator_id)):
                rewards[i] = values
        return rewards

    share = bool(share_prompt) and cache_argument(prm) is not None
    if share_prompt and not share:
        logger.info("%s takes no past cache: one forward per response", type(prm).__name__)

    def judge(items: list[tuple[Any, str]]) -> list[Judgement]:
        encoded = [encode(record, response) for record, response in items]
        rewards = rewards_shared(items, encoded) if share else rewards_one_by_one(encoded)
        out_judgements = []
        for (record, response), (_, steps, truncated), values in zip(items, encoded, rewards):
            judgement: Judgement = {
                "score": SCALE * min(values) if values else 0.0,
                "step_rewards": values,
                "steps": steps,
            }
            if truncated:
                judgement["truncated"] = True  # steps past max_length were not scored
            if benchmark is not None:
                judgement.update(_correctness(record, response, benchmark, grading_timeout))
            out_judgements.append(judgement)
        return out_judgements

    return judge


def _logits(out: Any, model: str) -> Any:
    logits = out.logits if hasattr(out, "logits") else out[0]
    if logits.shape[-1] != 2:
        raise ValueError(f"{model} gives {logits.shape[-1]} logits per token; a PRM gives 2")
    return logits


def _correctness(record: Any, response: str, benchmark: str, timeout: float | None) -> dict[str, Any]:
    try:
        gold = gold_answer(dict(record.meta), benchmark)
    except ValueError:
        raise ValueError(
            f"{record.where()}: no gold answer for benchmark {benchmark!r} (an 'answer' or 'solution' field)"
        ) from None
    answer = extract_answer(response, benchmark)
    # with a timeout, graded in a worker process that is killed and restarted past it (sympy can hang)
    correct = is_equivalent(answer, gold) if timeout is None else shared_worker(timeout).equivalent(answer, gold)
    return {"answer": answer, "gold": gold, "correct": correct}
