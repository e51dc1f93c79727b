"""SmolVLM / SmolVLM2 (`smolvlm`, HuggingFaceTB/SmolVLM2-*-Instruct): Idefics3's layout with a SmolLM2
language model; the template opens with ``<|im_start|>``.

transformers' SmolVLMProcessor cannot be built here as it is: its video processor needs torchvision,
its constructor refuses to run without the ``num2words`` package (used only to write video prompts) and
its ``apply_chat_template`` reads the video processor's frame settings even for images. Images only
here: `SmolVLMProcessorForImages` is the real class (same name) without its video half, built with or
without ``num2words``, whose chat template gets no frame settings; the family's loader loads it.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

from ..processors import load_processor_without_video, processor_folder, processor_without_video, without_video_class
from .base import FamilySpec
from .idefics3 import Idefics3


@contextlib.contextmanager
def _video_words_optional() -> Iterator[None]:
    """While building a SmolVLM processor without `num2words` installed: a stand-in that fails if a video
    prompt ever needs it (this processor refuses videos before that)."""
    from transformers.models.smolvlm import processing_smolvlm as module

    if module.num2words is not None:
        yield
        return

    def missing(*_: Any, **__: Any) -> str:
        raise ImportError("SmolVLM video prompts need the num2words package")

    module.num2words = missing
    try:
        yield
    finally:
        module.num2words = None


class _NoVideoSettings:
    """The frame settings SmolVLMProcessor.apply_chat_template reads from its video processor: unset."""

    num_frames = None
    fps = None


@functools.cache
def smolvlm_processor_class() -> type:
    """SmolVLMProcessor for images only (an instance of the real class, saved under its name)."""
    from transformers import SmolVLMProcessor

    base = without_video_class(SmolVLMProcessor)

    @functools.wraps(SmolVLMProcessor.__init__)  # its signature: the options read from processor_config.json
    def __init__(self, image_processor, tokenizer, video_processor=None, **kwargs):
        with _video_words_optional():
            SmolVLMProcessor.__init__(self, image_processor, tokenizer, None, **kwargs)

    return type(
        "SmolVLMProcessor",
        (base,),
        {
            "__init__": __init__,
            "video_processor": property(lambda self: _NoVideoSettings()),
            "__module__": __name__,
            "__qualname__": "SmolVLMProcessor",
            "__doc__": __doc__,
        },
    )


def smolvlm_processor(**kwargs: Any):
    """A SmolVLMProcessor for images (keyword arguments as `processor_without_video`)."""
    return processor_without_video(smolvlm_processor_class(), **kwargs)


def load_smolvlm(name_or_path: str, **kwargs: Any) -> tuple[Any, Any]:
    """(model, processor) of a SmolVLM checkpoint (hub id or local folder)."""
    import transformers

    model = transformers.AutoModelForImageTextToText.from_pretrained(name_or_path, **kwargs)
    hub = {k: v for k, v in kwargs.items() if k in ("revision", "token", "cache_dir", "local_files_only")}
    processor = load_processor_without_video(processor_folder(name_or_path, **hub), smolvlm_processor_class(), **hub)
    return model, processor


class SmolVLM(Idefics3):
    spec = FamilySpec(
        "smolvlm",
        model_types=("smolvlm",),
        loader=load_smolvlm,
        vision_modules=("vision_model",),
        projector_modules=("connector",),
    )
