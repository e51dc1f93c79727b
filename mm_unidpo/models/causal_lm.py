"""Plain causal LMs (the text-only path): Llama-3, Gemma-2, Qwen2.5 / Qwen2.5-Math, Mistral, SmolLM2 —
anything `AutoModelForCausalLM` loads. Prompts go through the tokenizer's chat template when it has one;
a base model without a template sees the raw prompt text followed by the response and EOS."""

from __future__ import annotations

from typing import Any

from mm_unidpo.data.records import BadRecordError, Message, PreferenceRecord

from .base import Adapter


class CausalLMAdapter(Adapter):
    family = "causal_lm"

    @classmethod
    def matches(cls, model: Any) -> bool:
        config = getattr(model, "config", None)
        # Anything with a language-model head and no vision tower.
        return hasattr(model, "get_output_embeddings") and getattr(config, "vision_config", None) is None

    def render(self, messages: list[Message], response: str | None) -> str:
        text_messages = [{"role": m["role"], "content": _text(m["content"])} for m in messages]
        if getattr(self.tokenizer, "chat_template", None) is None:
            prompt = "\n".join(m["content"] for m in text_messages)
            return prompt if response is None else prompt + response
        if response is not None:
            text_messages.append({"role": "assistant", "content": response})
        return self.tokenizer.apply_chat_template(text_messages, tokenize=False,
                                                  add_generation_prompt=response is None)

    def tokenize_prompt(self, text: str, images: list, record: PreferenceRecord):
        if images:
            raise BadRecordError(record, "images_for_text_model",
                                 f"{len(images)} image(s) given but {self.family} is a text-only model")
        ids = self.tokenizer(text, add_special_tokens=self._needs_special_tokens(text))["input_ids"]
        return ids, {}, {}


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if part.get("type") == "text")
