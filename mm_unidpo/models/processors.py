"""Building multimodal processors when no video processor can be built (no torchvision).

In transformers 5.x every video processor needs torchvision, and ``ProcessorMixin.__init__``
validates *every* sub-processor named in the processor's ``__init__`` signature against its base
class.  Without torchvision ``transformers.VideoProcessorMixin`` does not exist, so
``Qwen2VLProcessor(image_processor=..., tokenizer=..., video_processor=None)`` (and the same for
Qwen2.5-VL, Qwen3-VL and LLaVA-OneVision) fails with
``AttributeError: type object 'VIDEO_PROCESSOR_MAPPING' has no attribute '_extra_content'``;
``AutoProcessor.from_pretrained`` fails the same way for real checkpoints.  Passing ``None`` or a
stand-in object cannot work: the check fails while *looking up* the base class, before any
``isinstance`` test.

The workaround here: a subclass of the real processor class (same ``__name__``, so
``save_pretrained`` writes the real ``processor_class``) whose ``get_attributes()`` leaves out
``video_processor``.  Everything else -- image/text processing, chat templates, ``mm_token_type_ids``
-- is the real class's code; only ``videos=`` input is unsupported (raises ``ValueError``).
"""

from __future__ import annotations

import functools
import inspect
import json
import os
from typing import Any

import transformers
from huggingface_hub import snapshot_download
from transformers import AutoImageProcessor, AutoTokenizer

__all__ = ["load_processor_without_video", "processor_without_video", "qwen_vl_processor_without_video"]


@functools.cache
def without_video_class(processor_cls: type) -> type:
    base_attributes = processor_cls.get_attributes()  # type: ignore[attr-defined]
    if "video_processor" not in base_attributes:
        return processor_cls

    def get_attributes(cls):
        return [a for a in base_attributes if a != "video_processor"]

    def __call__(self, *args, videos=None, **kwargs):
        if videos is not None:
            raise ValueError(f"{type(self).__name__} was built without a video processor (needs torchvision)")
        return processor_cls.__call__(self, *args, **kwargs)

    return type(
        processor_cls.__name__,
        (processor_cls,),
        {
            "get_attributes": classmethod(get_attributes),
            "__call__": __call__,
            "__module__": __name__,
            "__qualname__": processor_cls.__qualname__,
            "__doc__": f"{processor_cls.__name__} without its video processor (see {__name__}).",
        },
    )


def processor_without_video(
    processor_cls: type, *, image_processor: Any, tokenizer: Any, chat_template: str | None = None, **kwargs: Any
):
    """Instantiate ``processor_cls`` (e.g. ``Qwen2VLProcessor``) with no video processor.

    The returned object is an instance of ``processor_cls``.  Classes without a
    ``video_processor`` argument are built unchanged.  ``kwargs`` are the processor's own
    options (``num_image_tokens``, ``vision_feature_select_strategy``...).
    """
    cls = without_video_class(processor_cls)
    if chat_template is None:
        chat_template = getattr(tokenizer, "chat_template", None)
    return cls(image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template, **kwargs)


qwen_vl_processor_without_video = processor_without_video


def load_processor_without_video(pretrained: str | os.PathLike, processor_cls: type | None = None, **kwargs: Any):
    """``AutoProcessor.from_pretrained`` replacement for a *local* checkpoint directory.

    (``AutoProcessor.from_pretrained`` raises ``OSError: Can't load video processor`` there.)

    Loads the tokenizer (``AutoTokenizer``) and image processor (``AutoImageProcessor``, which
    picks the PIL backend without torchvision), reads the processor's own options and chat
    template from ``processor_config.json`` / ``chat_template.jinja`` / ``chat_template.json``,
    and builds the processor with :func:`processor_without_video`.  ``kwargs`` go to both
    ``from_pretrained`` calls (e.g. ``local_files_only=True``).
    """
    path = os.fspath(pretrained)
    options: dict[str, Any] = {}
    cfg_file = os.path.join(path, "processor_config.json")
    if os.path.isfile(cfg_file):
        with open(cfg_file, encoding="utf-8") as f:
            options = json.load(f)
    name = options.pop("processor_class", None)
    for fname in ("preprocessor_config.json", "tokenizer_config.json"):  # real hub repos keep it there
        fpath = os.path.join(path, fname)
        if name is None and os.path.isfile(fpath):
            with open(fpath, encoding="utf-8") as f:
                name = json.load(f).get("processor_class")
    if processor_cls is None:
        if name is None:
            raise ValueError(f"no processor_class found in {path}; pass processor_cls")
        processor_cls = getattr(transformers, name)
    chat_template = options.pop("chat_template", None)
    for fname in ("chat_template.jinja", "chat_template.json"):
        fpath = os.path.join(path, fname)
        if os.path.isfile(fpath):
            with open(fpath, encoding="utf-8") as f:
                text = f.read()
            chat_template = json.loads(text)["chat_template"] if fname.endswith(".json") else text
            break
    tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    image_processor = AutoImageProcessor.from_pretrained(path, **kwargs)
    init_args = set(inspect.signature(processor_cls).parameters)
    options = {k: v for k, v in options.items() if k in init_args and not k.endswith("processor") and k != "tokenizer"}
    return processor_without_video(
        processor_cls, image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template, **options
    )


def processor_folder(name_or_path: str, **hub_kwargs: Any) -> str:
    """A local folder with the processor's files (a hub id: just those files, downloaded)."""
    if os.path.isdir(name_or_path):
        return name_or_path
    return snapshot_download(
        name_or_path,
        allow_patterns=["*.json", "*.jinja", "*.txt", "*.model", "*.tiktoken"],
        **{k: v for k, v in hub_kwargs.items() if k in ("revision", "token", "cache_dir")},
    )
