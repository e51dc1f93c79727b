"""Special-token text in a response: encoded as plain text, never as the token.

A response may contain the text of a special token ("</s>", "<|im_end|>": an HTML strikethrough tag,
a pasted chat log). Tokenized as usual it would become that token mid-response: an end of turn the
model is trained to emit early, or a response cut short. Only the chat template's own tokens are
special; the user's content is tokenized with ``split_special_tokens=True``.
"""

from __future__ import annotations

from typing import Any

from mm_unidpo.data.records import BadRecordError, PreferenceRecord


def special_token_texts(tokenizer: Any) -> list[str]:
    """The text of every special token ("</s>", "<|im_end|>", ...), longest first."""
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    texts = set(getattr(tokenizer, "all_special_tokens", []) or [])
    texts.update(str(t) for t in added.values() if getattr(t, "special", False))
    return sorted((t for t in texts if t), key=len, reverse=True)


def ids_with_plain_content(
    tokenizer: Any, text: str, content: str, special_texts: list[str], record: PreferenceRecord | None
) -> list[int]:
    """`text` tokenized with the special tokens of `content` (a span of it) split into plain text."""
    start, span = text.find(content), content
    if start < 0:
        span = content.strip()
        start = text.find(span) if span else -1
    if start < 0:
        special = next(t for t in special_texts if t in content)
        raise BadRecordError(
            record,
            "template_mismatch",
            f"the response contains the text of the special token {special!r}, and the chat "
            f"template does not write the response verbatim, so it cannot be encoded as text",
        )
    before, after = text[:start], text[start + len(span) :]

    def encode(piece: str, split: bool) -> list[int]:
        return tokenizer(piece, add_special_tokens=False, split_special_tokens=split)["input_ids"] if piece else []

    if any(t in before for t in special_texts):  # the template's own tokens stay special
        head = encode(before, False) + encode(span, True)
    else:  # tokenized together, so the leading space joins the first word as usual
        head = encode(before + span, True)
    return head + encode(after, False)
