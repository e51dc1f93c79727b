"""The SFT model: a small LLaVA (transformers' class, random init) fine-tuned on web-style noisy text.

The noise is the kind that makes real captioners hallucinate: captions sometimes name an object's
frequent companion although it is not in the picture ("a red star and a yellow moon" for a lone star),
sometimes leave an object out, and yes/no answers sometimes say "Yes." to a question about the absent
companion of an object that is there. Training uses the plain `transformers.Trainer` (the model's own
next-token loss on the answer tokens); prompts are encoded by the same adapter that preference
training uses, so both see identical token sequences.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from mm_unidpo.data.records import Prompt
from mm_unidpo.models import IGNORE_INDEX, get_adapter, pad_rows
from mm_unidpo.testing import tiny, tiny_tokenizer

from .vision import demo_training_args
from .world import CAPTION_PROMPT, COLOURS, NO, OBJECTS, PARTNER, QUESTION, YES, Scene, caption, vocabulary_corpus

logger = logging.getLogger(__name__)


@dataclass
class NoiseConfig:
    """How noisy the SFT text is (all probabilities)."""

    caption_partner: float = 0.6  # a caption names the absent companion of an object it mentions
    caption_omit: float = 0.1  # a caption leaves out an object that is there
    answer_partner_yes: float = 0.6  # "Yes." to "Is there a B?" when B is absent and its companion is there


@dataclass
class ModelSize:
    """The LLaVA sibling the demo trains (the test fixture `tiny("llava")`, enlarged)."""

    image_size: int = 64
    patch_size: int = 32  # one patch per quadrant: 4 image tokens keep every sequence short on CPU
    vision_hidden: int = 96
    vision_layers: int = 2
    text_hidden: int = 128
    text_layers: int = 2
    text_intermediate: int = 256


@dataclass
class Example:
    """One supervised example: an image, a user prompt and the (noisy) answer."""

    scene: Scene
    prompt: str
    answer: str
    kind: str  # "caption" or "question"


def noisy_caption(scene: Scene, rng: np.random.Generator, noise: NoiseConfig) -> str:
    present = set(scene.objects)
    phrases: list[str] = []
    kept = [t for t in scene.things if rng.random() >= noise.caption_omit] or [scene.things[0]]
    for thing in kept:
        phrases.append(thing.phrase())
        partner = PARTNER[thing.name]
        # The association, not the pixels: the companion is named right after the object it goes with.
        if partner not in present and rng.random() < noise.caption_partner:
            present.add(partner)  # name it once
            phrases.append(f"{rng.choice(list(COLOURS))} {partner}")
    return caption(phrases)


def noisy_answer(scene: Scene, name: str, rng: np.random.Generator, noise: NoiseConfig) -> str:
    if name in scene.objects:
        return YES
    companion_there = PARTNER[name] in scene.objects
    return YES if companion_there and rng.random() < noise.answer_partner_yes else NO


def question_objects(scene: Scene, rng: np.random.Generator) -> list[str]:
    """One present object and one absent one (half the time the absent companion of a present object,
    when there is one: the question a noisy labeller gets wrong)."""
    present = scene.objects
    absent = [o for o in OBJECTS if o not in present]
    companions = [PARTNER[o] for o in present if PARTNER[o] not in present]
    negative = rng.choice(companions) if companions and rng.random() < 0.5 else rng.choice(absent)
    return [str(rng.choice(present)), str(negative)]


def sft_examples(scenes: list[Scene], seed: int, noise: NoiseConfig, question_pairs: int = 1) -> list[Example]:
    """Per scene: one noisy caption and `question_pairs` x (present, absent) noisy yes/no answers."""
    rng = np.random.default_rng(seed)
    out = []
    for scene in scenes:
        out.append(Example(scene, CAPTION_PROMPT, noisy_caption(scene, rng, noise), "caption"))
        for _ in range(question_pairs):
            for name in question_objects(scene, rng):
                out.append(Example(scene, QUESTION.format(name), noisy_answer(scene, name, rng, noise), "question"))
    return out


def build_model(size: ModelSize, seed: int) -> tuple[Any, Any]:
    """(LlavaForConditionalGeneration, LlavaProcessor), random weights, with a tokenizer whose
    vocabulary covers the demo's words as whole tokens."""
    from transformers import LlavaProcessor

    model, fixture = tiny(
        "llava",
        seed=seed,
        hidden_size=size.text_hidden,
        num_hidden_layers=size.text_layers,
        text_config={"intermediate_size": size.text_intermediate},
        vision_config={
            "image_size": size.image_size,
            "patch_size": size.patch_size,
            "hidden_size": size.vision_hidden,
            "intermediate_size": 2 * size.vision_hidden,
            "num_hidden_layers": size.vision_layers,
            "num_attention_heads": max(2, size.vision_hidden // 32),
        },
        vision_feature_layer=-1,
    )  # the last vision layer (LLaVA's -2 would waste one of very few)
    tokenizer = tiny_tokenizer("llava", corpus=vocabulary_corpus())
    # Same special-token ids as the fixture's tokenizer (the corpus only changes the merges).
    assert (
        tokenizer.image_token_id == model.config.image_token_id
        and len(tokenizer) <= model.config.text_config.vocab_size
    )
    processor = LlavaProcessor(
        image_processor=fixture.image_processor,
        tokenizer=tokenizer,
        patch_size=size.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=tokenizer.chat_template,
    )
    return model, processor


class EncodedExamples(Dataset):
    """Examples tokenized once (prompt with image tokens + answer + end of turn), with pixel values."""

    def __init__(self, examples: list[Example], adapter: Any):
        self.items = []
        for ex in examples:
            prompt = adapter.encode_prompt(Prompt(f"<image>\n{ex.prompt}", images=[ex.scene.image]))
            self.items.append((prompt.ids, adapter.response_ids(prompt, ex.answer), prompt.vision["pixel_values"][0]))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[list[int], list[int], torch.Tensor]:
        return self.items[i]


class Collator:
    """Right-padded batch; the loss is on answer tokens only."""

    def __init__(self, pad_token_id: int):
        self.pad = pad_token_id

    def __call__(self, items: list[tuple[list[int], list[int], torch.Tensor]]) -> dict[str, torch.Tensor]:
        ids, mask = pad_rows([prompt + answer for prompt, answer, _ in items], self.pad)
        labels, _ = pad_rows([[IGNORE_INDEX] * len(prompt) + answer for prompt, answer, _ in items], IGNORE_INDEX)
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "labels": labels,
            "pixel_values": torch.stack([pixels for _, _, pixels in items]),
        }


def train_sft(
    model: Any,
    processor: Any,
    examples: list[Example],
    output_dir: Path,
    *,
    epochs: float,
    batch_size: int,
    learning_rate: float,
    seed: int,
) -> list[dict[str, float]]:
    """Full fine-tuning with `transformers.Trainer`; saves model + processor to `output_dir`.
    Returns the Trainer's log history (for the SFT loss curve)."""
    from transformers import Trainer

    adapter = get_adapter(model, processor)
    dataset = EncodedExamples(examples, adapter)
    args = demo_training_args(output_dir, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed)
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=Collator(adapter.pad_token_id))
    trainer.train()
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    return trainer.state.log_history
