"""Splitting a response into atomic claims (RLAIF-V's "divide" step).

`split_claims` is rule-based: sentences (at . ! ? and line breaks), each cut further at ";", at ", and" /
", but" / ", while" / ", whereas" / ", which" between clauses, and between the items of a list of noun
phrases (", " or " and " before an article or a number word: "a red star, a cross and two moons" gives
three claims). It keeps every word of the response in exactly one claim, so nothing the response says
goes unchecked; it does not rewrite a claim to stand on its own ("It is red." stays as it is). For finer
claims give an instruction LM (`ClaimSplitter`), which is asked to list them, one per line.
"""

from __future__ import annotations

import re
from typing import Any

_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_ITEM = r"(?:a|an|the|another|one|two|three|four|five|some|several)\b"
_CLAUSE = re.compile(
    rf"\s*;\s*|,\s*(?=(?:and|but|while|whereas|which)\b)|,\s*(?=(?:and\s+)?{_ITEM})|\s+and\s+(?={_ITEM})", re.IGNORECASE
)
_LEADING = re.compile(r"^(?:and|but|while|whereas)\s+", re.IGNORECASE)
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s*")

SPLIT_PROMPT = (
    "List every atomic factual claim that the following description of an image makes, one short "
    "claim per line, and nothing else.\n\nDescription: {response}"
)


def split_claims(response: str) -> list[str]:
    """The rule-based claims of a response (see the module doc), in order."""
    claims = []
    for sentence in _SENTENCE.split(response.strip()):
        for clause in _CLAUSE.split(sentence):
            clause = _LEADING.sub("", clause.strip()).strip(" ,;")
            if re.search(r"\w", clause):
                claims.append(clause)
    return claims


def parse_claim_lines(text: str) -> list[str]:
    """Claims from an LM's list: one per line, bullets and numbering removed."""
    lines = (_BULLET.sub("", line).strip() for line in text.splitlines())
    return [line for line in lines if re.search(r"\w", line)]


class ClaimSplitter:
    """Claims listed by an instruction LM (any family; greedy decoding through its adapter). A response
    for which the LM lists nothing falls back to the rule splitter, and says so (`rule_fallback`)."""

    def __init__(
        self, model: Any, processor: Any, *, prompt: str = SPLIT_PROMPT, max_new_tokens: int = 256, batch_size: int = 8
    ):
        from mm_unidpo.models import get_adapter  # lazy: torch; judge, pairs, score run without

        self.model, self.adapter = model, get_adapter(model, processor)
        self.prompt, self.max_new_tokens, self.batch_size = prompt, max_new_tokens, batch_size

    def __call__(self, responses: list[str]) -> list[tuple[list[str], bool]]:
        out: list[tuple[list[str], bool]] = []
        for start in range(0, len(responses), self.batch_size):
            chunk = responses[start : start + self.batch_size]
            texts = [
                self.adapter.render(
                    [{"role": "user", "content": [{"type": "text", "text": self.prompt.format(response=r)}]}], None
                )
                for r in chunk
            ]
            ids = self.adapter.generate(
                self.model,
                texts,
                [[] for _ in chunk],
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
            )
            for response, text in zip(chunk, self.adapter.tokenizer.batch_decode(ids, skip_special_tokens=True)):
                claims = parse_claim_lines(text)
                out.append((claims, False) if claims else (split_claims(response), True))
        return out
