"""A text reward model as a judge: `mm-unidpo score --reward-model`'s scorer (`RewardModelScorer`), one
output of an `AutoModelForSequenceClassification` on the chat-templated prompt and response. Text only:
it does not see the images (a warning says so when prompts have some)."""

from __future__ import annotations

from typing import Any

from .base import Judge, Judgement
from .scorers import RewardModelScorer


def reward_model_judge(
    model: str,
    batch_size: int = 8,
    max_length: int = 4096,
    device: str | None = None,
    dtype: str | None = None,
    trust_remote_code: bool = False,
) -> Judge:
    scorer = RewardModelScorer(
        model,
        batch_size=int(batch_size),
        max_length=int(max_length),
        device=device,
        dtype=dtype,
        trust_remote_code=bool(trust_remote_code),
    )

    def judge(items: list[tuple[Any, str]]) -> list[Judgement]:
        return [{"score": value} for value in scorer.score_all(items)]

    return judge
