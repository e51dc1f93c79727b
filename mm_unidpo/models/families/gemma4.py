"""Gemma-4 (`gemma4`): Gemma4ForConditionalGeneration with Gemma4Processor.

The template writes one image token per image; the processor expands it into ``<start_of_image>`` +
one soft token per pooled patch group (up to ``max_soft_tokens``) + ``<end_of_image>`` and returns
per-token ``mm_token_type_ids``, from which the model attends bidirectionally among each image's
tokens (``use_bidirectional_attention="vision"``): they are padded with the tokens and passed to every
forward. Images are (images, patches, patch pixels) padded to the processor's patch budget, with
``image_position_ids``: the defaults stack them.

Plain layout only, as Gemma-3: bidirectional image blocks and sliding-window layers are not the packed
layout's per-pair causal attention.

Gemma4Processor cannot be built as it is without torchvision (its video processor needs it, and it
hands ``video_processor`` to ``ProcessorMixin`` by keyword even when there is none):
`gemma4_processor_class` is the real class without its video half, which the family's loader loads.
"""

from __future__ import annotations

import functools
from typing import Any

from ..processors import load_processor_without_video, processor_folder, without_video_class
from .base import Family, FamilySpec


@functools.cache
def gemma4_processor_class() -> type:
    """Gemma4Processor for images (and audio) only: an instance of the real class, saved under its name."""
    from transformers import Gemma4Processor
    from transformers.processing_utils import ProcessorMixin

    class _NoVideoKeyword(ProcessorMixin):
        """Between Gemma4Processor and ProcessorMixin: drops the `video_processor=None` it passes on."""

        def __init__(self, *args: Any, video_processor: Any = None, **kwargs: Any):
            if video_processor is not None:
                raise ValueError("this Gemma4Processor is built without a video processor")
            ProcessorMixin.__init__(self, *args, **kwargs)

    def __init__(
        self,
        feature_extractor=None,
        image_processor=None,
        tokenizer=None,
        video_processor=None,
        **kwargs,
    ):
        if feature_extractor is None or isinstance(feature_extractor, dict):  # a dict: from processor_config.json
            from transformers import Gemma4AudioFeatureExtractor

            settings = {k: v for k, v in (feature_extractor or {}).items() if not k.endswith("_type")}
            feature_extractor = Gemma4AudioFeatureExtractor(**settings)
        Gemma4Processor.__init__(self, feature_extractor, image_processor, tokenizer, None, **kwargs)

    base = without_video_class(Gemma4Processor)
    __init__ = functools.wraps(Gemma4Processor.__init__)(__init__)  # its options, read from processor_config.json
    return type(
        "Gemma4Processor",
        (base, _NoVideoKeyword),
        {
            "__init__": __init__,
            "__module__": __name__,
            "__qualname__": "Gemma4Processor",
            "__doc__": gemma4_processor_class.__doc__,
        },
    )


def load_gemma4(name_or_path: str, **kwargs: Any) -> tuple[Any, Any]:
    """(model, processor) of a Gemma-4 checkpoint (hub id or local folder)."""
    import transformers

    model = transformers.AutoModelForImageTextToText.from_pretrained(name_or_path, **kwargs)
    hub = {k: v for k, v in kwargs.items() if k in ("revision", "token", "cache_dir", "local_files_only")}
    processor = load_processor_without_video(processor_folder(name_or_path, **hub), gemma4_processor_class(), **hub)
    return model, processor


class Gemma4(Family):
    spec = FamilySpec(
        "gemma4",
        model_types=("gemma4",),
        loader=load_gemma4,
        vision_modules=("vision_tower",),
        projector_modules=("embed_vision",),
        layouts=("plain",),
        token_extra_keys=("mm_token_type_ids",),
    )

    def processor_images(self, rows: list[list[Any]]) -> list[Any]:
        """One list of images per text, as the processor lays them out."""
        return [list(row) for row in rows]
