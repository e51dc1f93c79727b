"""Does the model read the image? POPE's present-object questions asked with a blank image.

Each held-out scene's "yes" questions of the random POPE split ("Is there a circle in the image?" about an
object that is in the scene) are asked again with a uniform grey image of the same size. A model that
answers from the image says "No."; one that answers from the question and its text prior says "Yes."
as before. The answer is the likelier of the two answers the demo's model is trained on ("Yes." / "No.",
their summed log-probs after the rendered prompt): the rate of "No." is the image-reliance measure
(1 = every answer follows the blank image, 0 = none does).
"""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image

from mm_unidpo.data import Prompt
from mm_unidpo.models import get_adapter

from .evaluate import Question
from .world import NO, QUESTION, YES, Scene

GREY = (128, 128, 128)  # the `blank` corruption's colour (data/corruption.py)


def blank_image_reliance(
    model: Any, processor: Any, scenes: list[Scene], questions: dict[str, list[Question]], batch_size: int = 64
) -> dict[str, float | int]:
    """{"blank_no_rate": share of present-object questions answered "No." with a blank image, "n": count}."""
    asked = [q for q in questions["random"] if q.label == "yes"]
    if not asked:
        return {"blank_no_rate": float("nan"), "n": 0}
    adapter = get_adapter(model, processor)
    was_training = model.training
    model.eval()
    says_no = 0
    for start in range(0, len(asked), batch_size):
        chunk = asked[start : start + batch_size]
        prompts = [
            adapter.encode_prompt(
                Prompt(f"<image>\n{QUESTION.format(q.object)}", [Image.new("RGB", scenes[q.scene].image.size, GREY)])
            )
            for q in chunk
        ]
        answers = [[adapter.response_ids(p, YES), adapter.response_ids(p, NO)] for p in prompts]
        with torch.no_grad():
            sums, _ = adapter.score_continuations(model, prompts, answers)
        says_no += int((sums[:, 1] > sums[:, 0]).sum())
    model.train(was_training)
    return {"blank_no_rate": says_no / len(asked), "n": len(asked)}
