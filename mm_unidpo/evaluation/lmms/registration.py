"""How lmms-eval finds ``--model mm_unidpo``.

lmms-eval (0.7+) resolves model names through its manifest registry (``lmms_eval.models.registry_v2``),
filled from its built-in table and from the Python entry-point group ``lmms_eval.models``; the old
``@register_model`` decorator only fills a legacy dict that name resolution no longer reads. This
project declares, in pyproject.toml::

    [project.entry-points."lmms_eval.models"]
    mm_unidpo = "mm_unidpo.evaluation.lmms.registration:manifest"

so an installed (or ``pip install -e``) mm-unidpo makes ``lmms-eval --model mm_unidpo`` work with no
flags. :func:`register` adds the same manifest at run time, for a process where the entry point is not
installed (our own CLI calls it).

This module is imported while lmms-eval builds its registry: it must stay light (no torch).
"""

from __future__ import annotations

MODEL_NAME = "mm_unidpo"
ALIASES = ("mm-unidpo",)
CLASS_PATH = "mm_unidpo.evaluation.lmms.model.MMUniDPO"


def manifest():
    """The ``ModelManifest`` of our model (the entry point's payload)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_NAME, simple_class_path=CLASS_PATH, aliases=ALIASES)


def register() -> None:
    """Add our manifest to lmms-eval's live registry (idempotent)."""
    from lmms_eval import models

    models.MODEL_REGISTRY_V2.register_manifest(manifest(), overwrite=True)
    models.AVAILABLE_MODELS[MODEL_NAME] = CLASS_PATH.rsplit(".", 1)[-1]
