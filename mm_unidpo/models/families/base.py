"""What a model family is: a declared `FamilySpec` and the hooks in which families differ.

A family says only what differs from the defaults here, which fit the transformers image-text-to-text
classes whose processor expands each image placeholder into the model's image tokens (LLaVA-1.5):

    render            messages (+ an assistant response) -> chat-template text
    tokenize_prompt   rendered prompt + images -> token ids, vision tensors, per-token extras
    response_ids      a rendered response -> its token ids (ending with an end-of-turn token)
    prompt_positions  how many positions a prompt's ids take in the model (LLaVA-orig: images expanded)
    stack_vision      the vision tensors of a batch's blocks, laid out as the model takes them
    model_inputs      a batch -> forward keyword arguments (LLaVA-orig: splices image features in)
    position_ids      a batch's positions (None: the model derives its own, e.g. M-RoPE on plain rows)
    forward_parts     a batch split into parts that need forwards of their own (None: one forward; Mllama)

Encoding (encoding.py), layouts (layouts/) and the forward (logps.py) call these hooks; nothing
else in the package knows a family by name.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from mm_unidpo.data.records import IMAGE_PLACEHOLDER, BadRecordError, Message, PreferenceRecord

from ..layouts.blocks import Blocks, PairBatch
from ..special_tokens import ids_with_plain_content, special_token_texts
from ..utils import to_model_inputs


@dataclass(frozen=True)
class FamilySpec:
    """What the rest of the package needs to know about a family, declared in its file."""

    name: str
    model_types: tuple[str, ...]  # config.model_type values this family serves
    auto_class: str = "AutoModelForImageTextToText"  # the transformers auto class that loads it
    processor_class: str = "AutoProcessor"  # ... and its processor (AutoTokenizer: the tokenizer alone)
    # Loads (model, processor) itself instead, with the keyword arguments of `from_pretrained`.
    loader: Callable[..., tuple[Any, Any]] | None = None
    # Module-name parts of the vision tower and the projector: kept out of 4-bit quantisation and LoRA,
    # frozen in training; the first projector name present is what `lora.train_projector` trains.
    vision_modules: tuple[str, ...] = ("vision_tower",)
    projector_modules: tuple[str, ...] = ("multi_modal_projector",)
    # The batch layouts whose log-probs equal the plain layout's exactly for this family (layouts/).
    layouts: tuple[str, ...] = ("plain", "packed", "varlen")
    packed_attention: bool = True  # the forward hands keyword arguments down to attention (attention.py)
    takes_logits_to_keep: bool = True
    token_extra_keys: tuple[str, ...] = ()  # processor outputs that are per token (padded with the tokens)

    def matches(self, model: Any) -> bool:
        return getattr(getattr(model, "config", None), "model_type", None) in self.model_types


class Family:
    """Default hooks; a family file subclasses this and sets `spec`."""

    spec: ClassVar[FamilySpec]

    def __init__(self, model: Any, processor: Any, **options: Any):
        if options:
            raise TypeError(f"family {self.spec.name!r} takes no option(s) {sorted(options)}")
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        pad = self.tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else self.tokenizer.eos_token_id
        self.end_token_ids = _end_token_ids(model, self.tokenizer)
        config = getattr(model, "config", None)
        # A response must not hold the token the model replaces with image / video features.
        ids = {
            getattr(config, k, None)
            for k in ("image_token_id", "image_token_index", "video_token_id", "video_token_index")
        }
        self.media_token_ids = {i for i in ids if isinstance(i, int)}

    # ---- rendering -------------------------------------------------------------------------------

    def messages(self, prompt: str | list[Message], record: Any = None) -> list[Message]:
        """The prompt as chat messages whose content is a list of text / image parts."""
        if isinstance(prompt, str):
            return [{"role": "user", "content": split_image_placeholders(prompt)}]
        out = []
        for message in prompt:
            content = message.get("content")
            parts = split_image_placeholders(content) if isinstance(content, str) else list(content or [])
            out.append({"role": message.get("role", "user"), "content": parts})
        return out

    def render(self, messages: list[Message], response: str | None) -> str:
        """The chat-template text of `messages` (+ the assistant `response`, or the generation prompt)."""
        owner = self.processor if hasattr(self.processor, "apply_chat_template") else self.tokenizer
        if response is None:
            return owner.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        turn = {"role": "assistant", "content": [{"type": "text", "text": response}]}
        return owner.apply_chat_template([*messages, turn], tokenize=False, add_generation_prompt=False)

    def needs_special_tokens(self, text: str) -> bool:
        # As transformers' apply_chat_template: a template that writes BOS itself gets none added.
        bos = self.tokenizer.bos_token
        return not (bos and text.startswith(bos))

    # ---- tokenizing --------------------------------------------------------------------------------

    def processor_images(self, rows: list[list[Any]]) -> list[Any]:
        """The processor's ``images=`` for texts whose k-th has the images ``rows[k]``: all in order by
        default; a processor that lays images out per text overrides it."""
        return [image for row in rows for image in row]

    def tokenize_prompt(self, text: str, images: list, record: Any) -> tuple[list[int], dict, dict]:
        """Token ids of the rendered prompt (image tokens expanded), vision tensors, per-token extras."""
        kwargs = {"images": self.processor_images([images])} if images else {}
        out = self.processor(
            text=[text], return_tensors="pt", add_special_tokens=self.needs_special_tokens(text), **kwargs
        )
        ids = out["input_ids"][0].tolist()
        extras = {k: out[k][0].tolist() for k in self.spec.token_extra_keys if k in out}
        vision = {
            k: v
            for k, v in out.items()
            if k not in ("input_ids", "attention_mask", *self.spec.token_extra_keys) and isinstance(v, torch.Tensor)
        }
        return ids, vision, extras

    def prompt_positions(self, prompt_ids: list[int]) -> int:
        """Positions the prompt takes in the language model."""
        return len(prompt_ids)

    def what_counts(self, prompt_ids: list[int]) -> str:
        """What a prompt's length includes, for messages."""
        return "images included"

    def response_ids(
        self, prompt_text: str, prompt_ids: list[int], text: str, content: str | None, record: PreferenceRecord | None
    ) -> list[int]:
        """Token ids of a rendered response `text` (the user's `content` as the template writes it, plus
        the template's end of turn), ending with an end token.

        Special-token text inside the user's response ("</s>", "<|im_end|>" written out, e.g. HTML's
        strikethrough tag) is encoded as plain text, never as that token: only the template's own tokens
        are special, so a response never ends mid-way."""
        if content is not None and any(t in content for t in self.special_token_texts):
            ids = ids_with_plain_content(self.tokenizer, text, content, self.special_token_texts, record)
        else:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return self.ended(ids)

    def ended(self, ids: list[int]) -> list[int]:
        return ids if ids and ids[-1] in self.end_token_ids else [*ids, self.tokenizer.eos_token_id]

    def check_response(self, name: str, content: str, record: Any) -> None:
        """A response holding the text of the model's image/video token is a bad record (it would be an
        image slot), even though other special-token text in a response is encoded as plain text."""
        found = [t for t in self.media_token_texts if t in content]
        if found:
            raise BadRecordError(
                record,
                "placeholder_mismatch",
                f"the {name} response contains the model's image/video token {found[0]!r}, which "
                f"the model would take for an image slot",
            )

    @functools.cached_property
    def media_token_texts(self) -> list[str]:
        tokens = self.tokenizer.convert_ids_to_tokens(sorted(i for i in self.media_token_ids if i >= 0))
        return [t for t in tokens if t]

    @functools.cached_property
    def special_token_texts(self) -> list[str]:
        return special_token_texts(self.tokenizer)

    # ---- batching and the forward --------------------------------------------------------------------

    def stack_vision(self, per_block: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """The vision tensors of a batch whose blocks (layouts/blocks.py) have these, in block order."""
        keys = {k for v in per_block for k in v}
        return {k: torch.cat([v[k] for v in per_block if k in v], dim=0) for k in sorted(keys)}

    def model_inputs(self, model: Any, batch: PairBatch) -> tuple[dict[str, Any], Blocks]:
        """Forward keyword arguments for the batch's tokens and images, and the blocks they lie in."""
        return {"input_ids": batch.input_ids, **batch.vision, **batch.token_extras}, batch.blocks

    def position_ids(self, model: Any, batch: PairBatch, blocks: Blocks) -> torch.Tensor | None:
        """Text positions restarting at every block, continuing from the prompt into each response."""
        return blocks.positions(batch.input_ids.device)

    def forward_parts(self, batch: PairBatch) -> list[PairBatch] | None:
        """The batch as parts (the same items and slots, each part holding some of the blocks) that must go
        through the model in separate forwards, for a model whose result for a row depends on what the
        other rows of its forward hold; their log-probs are summed. None (the default): one forward."""
        return None

    def max_length(self, wanted: int) -> int:
        """The longest sequence the model takes when `wanted` is asked for."""
        return wanted

    # ---- generation -----------------------------------------------------------------------------------

    def generate_inputs(self, prompts: list[str], images: list[list[Any]]) -> dict[str, Any]:
        """`model.generate` inputs for rendered prompts, left-padded (each row continues from its own end)."""
        extra = {"images": self.processor_images(images)} if any(images) else {}
        inputs = self.processor(
            text=prompts,
            padding=True,
            padding_side="left",
            return_tensors="pt",
            add_special_tokens=self.needs_special_tokens(prompts[0]),
            **extra,
        )
        return dict(inputs)

    @torch.no_grad()
    def generate(
        self, model: Any, prompts: list[str], images: list[list[Any]], *, device: Any = None, **settings: Any
    ) -> Any:
        """New token ids continuing each rendered prompt (`images`: one list of PIL images per prompt),
        ``num_return_sequences`` rows per prompt, padded after the end token; `settings` go to
        ``model.generate`` (with ``return_dict_in_generate=True`` its output object comes back,
        ``sequences`` cut to the new tokens the same way)."""
        inputs = to_model_inputs(self.generate_inputs(prompts, images), model, device)
        settings.setdefault("pad_token_id", self.pad_token_id)
        settings.setdefault("eos_token_id", sorted(self.end_token_ids))
        out = model.generate(**inputs, **settings)
        width = inputs["input_ids"].shape[1]
        if isinstance(out, torch.Tensor):
            return out[:, width:]
        out.sequences = out.sequences[:, width:]  # return_dict_in_generate: the output object
        return out


def split_image_placeholders(text: str) -> list[dict[str, str]]:
    """Split text at <image> placeholders into interleaved image / text parts."""
    chunks = text.split(IMAGE_PLACEHOLDER)
    parts: list[dict[str, str]] = []
    for i, chunk in enumerate(chunks):
        if i > 0:
            parts.append({"type": "image"})
        chunk = chunk.strip() if len(chunks) > 1 else chunk
        if chunk:
            parts.append({"type": "text", "text": chunk})
    return parts


def _end_token_ids(model: Any, tokenizer: Any) -> set[int]:
    ids = {tokenizer.eos_token_id}
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(eos if isinstance(eos, (list, tuple)) else [eos])
    return {i for i in ids if i is not None}
