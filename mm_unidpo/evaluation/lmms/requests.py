"""What the lmms-eval model makes of a request before any model runs: the task's generation kwargs as
`generate` settings plus stop strings, where to cut a generated text, and a task's visuals as RGB images.

    settings, until = generation_settings({"until": ["\\n\\n"], "temperature": 0}, default_max_new_tokens=128)
    text = cut_at_stops(text, until)
    images = as_images(doc_to_visual(doc))
"""

from __future__ import annotations

from typing import Any

from PIL import Image

from .registration import MODEL_NAME

# generation kwargs passed on to `generate` (others that tasks set, e.g. `image_aspect_ratio`, are ignored)
GENERATE_KEYS = (
    "max_new_tokens",
    "num_beams",
    "top_p",
    "top_k",
    "repetition_penalty",
    "length_penalty",
    "no_repeat_ngram_size",
    "min_new_tokens",
)


def as_bool(value: Any) -> bool:
    """A model_args / gen_kwargs flag: "true", "1", "yes", "on" (any case) or a truthy value."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def generation_settings(
    gen_kwargs: dict[str, Any] | None, *, default_max_new_tokens: int
) -> tuple[dict[str, Any], list[str]]:
    """(`generate` keyword settings, stop strings) from a task's gen_kwargs: greedy unless a temperature > 0
    (or do_sample) asks for sampling, and then without top_p / top_k."""
    gen = dict(gen_kwargs or {})
    until = gen.pop("until", None)
    until = [until] if isinstance(until, str) else list(until or [])
    until = [u for u in until if u]
    settings: dict[str, Any] = {k: gen[k] for k in GENERATE_KEYS if gen.get(k) is not None}
    settings["max_new_tokens"] = int(settings.get("max_new_tokens", default_max_new_tokens))
    settings["num_beams"] = int(settings.get("num_beams", 1))
    temperature = gen.get("temperature")
    do_sample = float(temperature) > 0 if temperature is not None else as_bool(gen.get("do_sample", False))
    settings["do_sample"] = do_sample
    if do_sample:
        settings["temperature"] = float(temperature) if temperature is not None else 1.0
    else:
        settings.pop("top_p", None)
        settings.pop("top_k", None)
        settings.update(temperature=None, top_p=None, top_k=None)
    return settings, until


def cut_at_stops(text: str, until: list[str]) -> str:
    """`text` up to the first of the stop strings, each in turn."""
    for stop in until:
        index = text.find(stop)
        if index >= 0:
            text = text[:index]
    return text


def as_images(visuals: Any) -> list[Image.Image]:
    """A task's visuals (images, possibly nested in lists) as RGB images; video or audio is an error."""
    out = []
    for v in visuals or []:
        if isinstance(v, Image.Image):
            out.append(v.convert("RGB"))
        elif isinstance(v, (list, tuple)):
            out.extend(as_images(v))
        else:
            raise NotImplementedError(
                f"{MODEL_NAME} evaluates images only; got a {type(v).__name__} visual "
                "(video and audio tasks are not supported)"
            )
    return out
