"""A text reward model as a judge: `mm-unidpo score --reward-model`'s scorer (`RewardModelScorer`), one
output of an `AutoModelForSequenceClassification` on the chat-templated prompt and response. Text only:
it does not see the images (a warning says so when prompts have some). The responses to one prompt are
scored from one prefill of their common start (`shared_prompt.py`); `share_prompt=false`: one forward
per response, the reference path."""

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
    share_prompt: bool = True,
) -> Judge:
    scorer = RewardModelScorer(
        model,
        batch_size=int(batch_size),
        max_length=int(max_length),
        device=device,
        dtype=dtype,
        trust_remote_code=bool(trust_remote_code),
    )

    score = scorer.score_all if share_prompt else scorer.score_one_by_one

    def judge(items: list[tuple[Any, str]]) -> list[Judgement]:
        return [{"score": value} for value in score(items)]

    return judge
