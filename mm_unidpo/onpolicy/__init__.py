"""On-policy preference data: generate, judge, pair — then iterate.

    prompts (+ images) ─ generate ─▶ samples.jsonl ─ judge ─▶ scored.jsonl ─ pairs ─▶ pairs.jsonl ─ train
          ▲                                                                                          │
          └────────────────────────── iterate: the next round samples from the trained model ◀──────┘

* :mod:`.generate` — `mm-unidpo generate`: n samples per prompt from the policy (family adapters, or vLLM).
* :mod:`.judge` and :mod:`.judges` — `mm-unidpo judge`: a score per sample (rule functions, the object
  judge, a text reward model, a math process reward model, a VLM verifying claims).
* :mod:`.pairs` — `mm-unidpo pairs`: preference pairs in our format, with scores and a summary.
* :mod:`.iterate` — `mm-unidpo iterate`: rounds of all of it plus training and evaluation.

Every command writes one JSON line per prompt as it goes and continues where it stopped when rerun
(:mod:`.store`); prompts and sample lines are described in :mod:`.records`.
"""

from __future__ import annotations

from .generate import generate_samples
from .judge import judge_samples, judged_means, read_samples
from .judges import JUDGES, make_judge
from .pairs import PairConfig, PairStats, build_pairs, read_scored, write_pairs
from .records import PromptRecord, load_prompts, record_of
from .samplers import GenerateConfig, HFSampler, VLLMSampler, load_sampler

__all__ = [
    "JUDGES",
    "GenerateConfig",
    "HFSampler",
    "PairConfig",
    "PairStats",
    "PromptRecord",
    "VLLMSampler",
    "build_pairs",
    "generate_samples",
    "judge_samples",
    "judged_means",
    "load_prompts",
    "load_sampler",
    "make_judge",
    "read_samples",
    "read_scored",
    "record_of",
    "write_pairs",
]
