"""A VLM that sees the image verifies a response claim by claim (RLAIF-V's divide-and-conquer feedback).

    mm-unidpo judge samples.jsonl --judge vlm --model llava-hf/llava-1.5-13b-hf --out scored.jsonl
    mm-unidpo judge samples.jsonl --judge vlm --model Qwen/Qwen2-VL-7B-Instruct \\
        --judge-arg claims_model=Qwen/Qwen2.5-7B-Instruct --out scored.jsonl

The response is split into atomic claims (:mod:`.claims`: rule-based, or listed by `claims_model`). For
every claim the judge model gets the record's images and the question `question` ("Is the following
statement about the image true? ..."), and the claim is accepted when log p("Yes") > log p("No") — the
log-likelihood of each answer as the assistant turn (end-of-turn token included), computed by our
adapters exactly as training computes response log-probs (`Adapter.score_continuations`, the two
answers sharing the prompt as a pair's responses do). Any family can judge. score = `scale` × (accepted claims / claims)
(`scale` 10: the 0-10 scale of τ_good; 1: the plain share), with the claims, their verdicts, the margins
log p(Yes) − log p(No) and the counts. A response with no claim scores 0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mm_unidpo.data import IMAGE_PLACEHOLDER, Prompt

from .base import Judge, Judgement
from .claims import ClaimSplitter, split_claims

QUESTION = "Is the following statement about the image true? Answer yes or no.\nStatement: {claim}"


class VLMJudge:
    """The judge of the module doc for a loaded (model, processor)."""

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        family: str | None = None,
        question: str = QUESTION,
        yes: str = "Yes",
        no: str = "No",
        batch_size: int = 8,
        scale: float = 10.0,
        max_length: int = 2048,
        splitter: Callable[[list[str]], list[tuple[list[str], bool]]] | None = None,
    ):
        from mm_unidpo.models import get_adapter  # lazy: torch; judge, pairs, score run without

        if "{claim}" not in question:
            raise ValueError("the VLM judge's question must contain {claim}")
        self.model = model.eval()
        self.adapter = get_adapter(model, processor, family=family, max_length=max_length)
        self.question, self.yes, self.no = question, yes, no
        self.batch_size, self.scale = int(batch_size), float(scale)
        self.splitter = splitter or (lambda responses: [(split_claims(r), False) for r in responses])

    def claim_prompt(self, record: Any, claim: str) -> Prompt:
        """The yes/no question about one claim, with the record's images."""
        prompt = (IMAGE_PLACEHOLDER + "\n") * len(record.images) + self.question.format(claim=claim)
        return Prompt(
            prompt, images=list(record.images), id=record.id, index=record.index, image_root=record.image_root
        )

    def margins(self, questions: list[Prompt]) -> list[float]:
        """log p(yes) − log p(no) for every question: the questions about one image (consecutive) from one
        prefill of their shared image + instruction prefix (`prefix.py`), their claims and answers in
        batches of 2 × `batch_size` rows; one forward per question where the family cannot share."""
        from .prefix import prefix_logps, shares_prefix  # lazy: torch; judge, pairs, score run without

        if not shares_prefix(self.adapter):
            return self.margins_one_by_one(questions)
        out: list[float] = []
        for group in _runs(questions, key=lambda q: (tuple(q.images), q.image_root)):
            prompts = [self.adapter.encode_prompt(q) for q in group]
            answers = [
                [self.adapter.response_ids(p, self.yes, q), self.adapter.response_ids(p, self.no, q)]
                for p, q in zip(prompts, group)
            ]
            logps = prefix_logps(self.adapter, self.model, prompts, answers, rows=2 * self.batch_size)
            assert logps is not None
            out += (logps[:, 0] - logps[:, 1]).tolist()
        return out

    def margins_one_by_one(self, questions: list[Prompt]) -> list[float]:
        """log p(yes) − log p(no) for every question, one forward each (prompt and both answers), in batches."""
        out: list[float] = []
        for start in range(0, len(questions), self.batch_size):
            prompts = [self.adapter.encode_prompt(q) for q in questions[start : start + self.batch_size]]
            answers = [
                [self.adapter.response_ids(p, self.yes, q), self.adapter.response_ids(p, self.no, q)]
                for p, q in zip(prompts, questions[start : start + self.batch_size])
            ]
            logps, _ = self.adapter.score_continuations(self.model, prompts, answers)
            out += (logps[:, 0] - logps[:, 1]).float().cpu().tolist()
        return out

    def __call__(self, items: list[tuple[Any, str]]) -> list[Judgement]:
        split = self.splitter([response for _, response in items])
        questions = [
            self.claim_prompt(record, claim) for (record, _), (claims, _) in zip(items, split) for claim in claims
        ]
        margins = iter(self.margins(questions))
        out = []
        for claims, fallback in split:
            values = [next(margins) for _ in claims]
            accepted = [m > 0 for m in values]
            judgement: Judgement = {
                "score": self.scale * sum(accepted) / len(claims) if claims else 0.0,
                "claims": claims,
                "accepted": accepted,
                "margins": values,
                "n_claims": len(claims),
                "n_accepted": sum(accepted),
            }
            if fallback:
                judgement["rule_fallback"] = True
            out.append(judgement)
        return out


def _runs(items: list[Any], key: Callable[[Any], Any]) -> list[list[Any]]:
    """Consecutive items with equal keys, in order."""
    runs: list[list[Any]] = []
    for item in items:
        if runs and key(runs[-1][0]) == key(item):
            runs[-1].append(item)
        else:
            runs.append([item])
    return runs


def vlm_judge(
    model: str,
    adapter: str | None = None,
    family: str | None = None,
    claims_model: str | None = None,
    question: str = QUESTION,
    yes: str = "Yes",
    no: str = "No",
    batch_size: int = 8,
    scale: float = 10.0,
    max_length: int = 2048,
    dtype: str = "auto",
    trust_remote_code: bool = False,
) -> Judge:
    """Load the judge model (and the claim-listing LM when given) and return the VLM judge."""
    import torch

    from mm_unidpo.models.loading import load_pretrained  # lazy: torch; judge, pairs, score run without

    device_map = "auto" if torch.cuda.is_available() else None
    loaded, processor = load_pretrained(
        model,
        family=family,
        adapter=adapter,
        dtype=dtype or "auto",
        trust_remote_code=bool(trust_remote_code),
        device_map=device_map,
    )
    splitter = None
    if claims_model:
        lm, lm_processor = load_pretrained(
            claims_model, dtype=dtype or "auto", device_map=device_map, trust_remote_code=bool(trust_remote_code)
        )
        splitter = ClaimSplitter(lm.eval(), lm_processor, batch_size=int(batch_size))
    return VLMJudge(
        loaded,
        processor,
        family=family,
        question=question,
        yes=yes,
        no=no,
        batch_size=batch_size,
        scale=scale,
        max_length=int(max_length),
        splitter=splitter,
    )
