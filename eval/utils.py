"""lmms-eval hooks of the tasks in this folder (POPE, CHAIR and AMBER formats, local files).

The YAMLs name these functions as ``!function utils.<name>``; the scoring itself is
:mod:`mm_unidpo.evaluation.hallucination` (pure functions, unit tested).

Images: a document's ``image`` (or ``images``: a list) is a path, a PIL image, or ``{"bytes": ...}``
(parquet / ``datasets`` image columns). A relative path is resolved against the document's
``image_root`` field if it has one, else ``$MM_UNIDPO_IMAGE_ROOT`` if set, else this folder's ``data/``
(where the sample images are).

Object tables (CHAIR / AMBER): the file a document names in its ``synonyms`` field (a dataset that
brings its own object list, taken as it is), else the file named by ``$MM_UNIDPO_CHAIR_SYNONYMS`` (e.g. the
original CHAIR ``synonyms.txt``; matched with the CHAIR rules, as the built-in table), else the built-in
COCO table; the sample tasks use ``data/shape_synonyms.txt`` through their own ``*_sample_*`` hooks.

POPE answers are read with their question (the document's ``text`` / ``question``), so "There is a dog,
but no cat." answers "Is there a dog in the image?" with yes.
"""

from __future__ import annotations

import functools
import io
import os
from typing import Any

from PIL import Image

from mm_unidpo.evaluation.hallucination import CHAIR_RULES, ObjectMatcher, amber_scores, chair_scores, pope_scores

HERE = os.path.dirname(os.path.abspath(__file__))
DATA_DIR = os.path.join(HERE, "data")
SAMPLE_SYNONYMS = os.path.join(DATA_DIR, "shape_synonyms.txt")


# ---- images ---------------------------------------------------------------------------------------


def _open_image(ref: Any, root: str) -> Image.Image:
    if isinstance(ref, Image.Image):
        return ref.convert("RGB")
    if isinstance(ref, dict):
        if ref.get("bytes") is not None:
            return Image.open(io.BytesIO(ref["bytes"])).convert("RGB")
        ref = ref.get("path")
    if isinstance(ref, (bytes, bytearray)):
        return Image.open(io.BytesIO(ref)).convert("RGB")
    if not isinstance(ref, str) or not ref:
        raise ValueError(f"unsupported image reference {ref!r:.80}")
    path = ref if os.path.isabs(ref) else os.path.join(root, ref)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image {ref!r} not found at {path!r} (image root {root!r}; set the document's "
                                "image_root or $MM_UNIDPO_IMAGE_ROOT)")
    with Image.open(path) as image:
        return image.convert("RGB")


def doc_to_visual(doc: dict) -> list[Image.Image]:
    root = doc.get("image_root") or os.environ.get("MM_UNIDPO_IMAGE_ROOT") or DATA_DIR
    refs = doc.get("images")
    if refs is None:
        refs = [doc["image"]] if doc.get("image") is not None else []
    return [_open_image(ref, root) for ref in refs]


def _prompted(text: str, kwargs: dict | None) -> str:
    kwargs = kwargs or {}
    return f"{kwargs.get('pre_prompt', '')}{text}{kwargs.get('post_prompt', '')}"


# ---- POPE -----------------------------------------------------------------------------------------


def pope_doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    question = doc.get("text", doc.get("question"))
    return _prompted(str(question).strip(), lmms_eval_specific_kwargs)


def pope_doc_to_target(doc: dict) -> str:
    return str(doc.get("label", doc.get("answer"))).strip().lower()


POPE_METRICS = ("pope_accuracy", "pope_precision", "pope_recall", "pope_f1", "pope_yes_ratio", "pope_ambiguous_ratio")


def pope_process_results(doc: dict, results: list[str]) -> dict[str, dict]:
    # The question (without the task's pre/post prompt) names the object the answer is read about.
    item = {"question_id": doc.get("question_id"), "prediction": results[0] if results else "",
            "label": pope_doc_to_target(doc), "question": str(doc.get("text", doc.get("question", ""))),
            "category": doc.get("category")}
    return {name: item for name in POPE_METRICS}


def _pope(items: list[dict]):
    return pope_scores([i["prediction"] for i in items], [i["label"] for i in items],
                       questions=[i.get("question") for i in items])


def pope_accuracy(items: list[dict]) -> float:
    return _pope(items).accuracy


def pope_precision(items: list[dict]) -> float:
    return _pope(items).precision


def pope_recall(items: list[dict]) -> float:
    return _pope(items).recall


def pope_f1(items: list[dict]) -> float:
    return _pope(items).f1


def pope_yes_ratio(items: list[dict]) -> float:
    """Share of *predictions* that are "yes" (0.5 is unbiased on the balanced POPE splits)."""
    return _pope(items).yes_ratio


def pope_ambiguous_ratio(items: list[dict]) -> float:
    """Share of answers that are neither yes nor no (lower is better)."""
    return _pope(items).ambiguous_ratio


# ---- CHAIR ----------------------------------------------------------------------------------------


def _matcher(path: str | None) -> ObjectMatcher:
    # The table of $MM_UNIDPO_CHAIR_SYNONYMS (e.g. the original CHAIR synonyms.txt) gets the CHAIR rules
    # ("baby elephant" is no person, "toilet seat" no chair); a dataset's own object list is taken as it is.
    return _load_matcher(path, bool(path) and path == _default_table())


@functools.lru_cache(maxsize=None)
def _load_matcher(path: str | None, chair_rules: bool) -> ObjectMatcher:
    if not path:
        return ObjectMatcher.coco()
    return ObjectMatcher.from_file(path, **(CHAIR_RULES if chair_rules else {}))


def _default_table() -> str | None:
    return os.environ.get("MM_UNIDPO_CHAIR_SYNONYMS") or None


def chair_doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    prompt = doc.get("prompt") or "Please describe this image in detail."
    return _prompted(prompt, lmms_eval_specific_kwargs)


CHAIR_METRICS = ("chair_s", "chair_i", "chair_recall")


def _chair_item(doc: dict, results: list[str], table: str | None) -> dict[str, dict]:
    objects = doc.get("objects", doc.get("gt_objects", doc.get("truth")))
    item = {"image_id": doc.get("image_id", doc.get("id")), "caption": results[0] if results else "",
            "objects": list(objects or []), "table": table}
    return {name: item for name in CHAIR_METRICS}


def chair_process_results(doc: dict, results: list[str]) -> dict[str, dict]:
    return _chair_item(doc, results, doc.get("synonyms") or _default_table())


def chair_sample_process_results(doc: dict, results: list[str]) -> dict[str, dict]:
    return _chair_item(doc, results, SAMPLE_SYNONYMS)


def _chair(items: list[dict]):
    return chair_scores([i["caption"] for i in items], [i["objects"] for i in items], _matcher(items[0]["table"]))


def chair_s(items: list[dict]) -> float:
    """Share of captions with at least one hallucinated object (lower is better)."""
    return _chair(items).chair_s


def chair_i(items: list[dict]) -> float:
    """Hallucinated objects / mentioned objects (lower is better)."""
    return _chair(items).chair_i


def chair_recall(items: list[dict]) -> float:
    """Ground-truth objects mentioned / ground-truth objects (higher is better)."""
    return _chair(items).recall


# ---- AMBER (generative) -----------------------------------------------------------------------------


def amber_doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    return _prompted(doc.get("prompt") or "Describe this image.", lmms_eval_specific_kwargs)


AMBER_METRICS = ("amber_chair", "amber_cover", "amber_hal", "amber_cog")


def _amber_item(doc: dict, results: list[str], table: str | None) -> dict[str, dict]:
    item = {"id": doc.get("id"), "response": results[0] if results else "", "truth": list(doc.get("truth") or []),
            "hallu": list(doc.get("hallu") or []), "table": table}
    return {name: item for name in AMBER_METRICS}


def amber_process_results(doc: dict, results: list[str]) -> dict[str, dict]:
    return _amber_item(doc, results, doc.get("synonyms") or _default_table())


def amber_sample_process_results(doc: dict, results: list[str]) -> dict[str, dict]:
    return _amber_item(doc, results, SAMPLE_SYNONYMS)


def _amber(items: list[dict]):
    return amber_scores([i["response"] for i in items], [i["truth"] for i in items], [i["hallu"] for i in items],
                        _matcher(items[0]["table"]))


def _amber_metric(name: str, items: list[dict]) -> float:
    return getattr(_amber(items), name)


# Partials, not functions named amber_*: lmms-eval bootstraps (100000 resamples) the standard error of
# every aggregation whose __name__ contains "amber_", which would rescore the whole set 100000 times.
amber_chair = functools.partial(_amber_metric, "chair")  # hallucinated / mentioned objects (lower is better)
amber_cover = functools.partial(_amber_metric, "cover")  # ground-truth objects mentioned (higher is better)
amber_hal = functools.partial(_amber_metric, "hal")  # responses with a hallucination (lower is better)
amber_cog = functools.partial(_amber_metric, "cog")  # hallucination-prone objects mentioned: LOWER is better


# ---- MMHal-Bench (answers for its GPT-4 judge) --------------------------------------------------------


def mmhal_doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    return _prompted(str(doc["question"]).strip(), lmms_eval_specific_kwargs)


def mmhal_process_results(doc: dict, results: list[str]) -> dict[str, dict]:
    answer = results[0] if results else ""
    return {"mmhal_answered": {"id": doc.get("id"), "model_answer": answer}}


def mmhal_answered(items: list[dict]) -> float:
    """Share of non-empty answers. MMHal-Bench's score (0-6) and hallucination rate come from its own
    GPT-4 judge: export the answers with ``python eval/mmhal_export.py`` and run the official script."""
    return sum(bool(str(i["model_answer"]).strip()) for i in items) / len(items) if items else float("nan")
