"""Plain causal LMs (the text-only path): Llama-3, Gemma-2, Qwen2.5 / Qwen2.5-Math, Mistral, SmolLM2 —
anything `AutoModelForCausalLM` loads. Prompts go through the tokenizer's chat template when it has one;
a base model without a template sees the raw prompt text followed by the response and EOS.
The fallback for any model with an LM head and no vision tower."""

from __future__ import annotations

from typing import Any

from mm_unidpo.data.records import BadRecordError, Message

from .base import Family, FamilySpec


class CausalLM(Family):
    spec = FamilySpec(
        "causal_lm",
        model_types=(),
        auto_class="AutoModelForCausalLM",
        processor_class="AutoTokenizer",
        vision_modules=(),
        projector_modules=(),
    )

    @staticmethod
    def accepts(model: Any) -> bool:
        """Anything with a language-model head and no vision tower."""
        return hasattr(model, "get_output_embeddings") and getattr(model.config, "vision_config", None) is None

    def render(self, messages: list[Message], response: str | None) -> str:
        text_messages = [{"role": m["role"], "content": _text(m["content"])} for m in messages]
        if getattr(self.tokenizer, "chat_template", None) is None:
            prompt = "\n".join(m["content"] for m in text_messages)
            return prompt if response is None else prompt + response
        if response is not None:
            text_messages.append({"role": "assistant", "content": response})
        return self.tokenizer.apply_chat_template(text_messages, tokenize=False, add_generation_prompt=response is None)

    def tokenize_prompt(self, text: str, images: list, record: Any) -> tuple[list[int], dict, dict]:
        if images:
            raise BadRecordError(
                record,
                "images_for_text_model",
                f"{len(images)} image(s) given but {self.spec.name} is a text-only model",
            )
        return self.tokenizer(text, add_special_tokens=self.needs_special_tokens(text))["input_ids"], {}, {}

    def generate_inputs(self, prompts: list[str], images: list[list[Any]]) -> dict[str, Any]:
        if any(images):
            raise ValueError(f"{sum(map(len, images))} image(s) given to the text-only model family causal_lm")
        return dict(
            self.tokenizer(
                prompts,
                padding=True,
                padding_side="left",
                return_tensors="pt",
                add_special_tokens=self.needs_special_tokens(prompts[0]),
            )
        )


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if part.get("type") == "text")
