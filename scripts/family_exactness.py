"""Max |difference| between the adapter and the naive plain forward, per family and batch layout.

    .venv/bin/python scripts/family_exactness.py gemma3 mllama      # or no argument: every family

For each family's tiny model (mm_unidpo.testing.tiny; the generic family's models too: GENERIC) and the
adapter tests' three records (two photos, one text-only), in each layout the tests use (plain padded right / left, packed, which a plain-only
family answers with plain): the largest |difference| of a response's summed log-prob, and of any
parameter's gradient of sum(chosen) - 0.5 sum(rejected), against each example's own plain forward on
the processor's rendering (tests/helpers.py naive_logp). Run from the repository root.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mm_unidpo.testing import GENERIC, available_families, tiny  # noqa: E402
from tests.helpers import LAYOUTS, make_adapter, naive_logp  # noqa: E402
from tests.test_models_adapters import base_records, gradients_against_naive  # noqa: E402


def main(families: list[str]) -> None:
    torch.set_num_threads(1)
    print(f"{'family':14s} {'layout':12s} {'used':7s} {'log-prob':>9s} {'gradient':>9s} {'max |grad|':>10s}")
    for family in families:
        model, processor = tiny(family, seed=0)
        model.eval()
        records = base_records(family)
        for layout in LAYOUTS:
            adapter = make_adapter(model, processor, layout)
            with torch.no_grad():
                out = adapter.sequence_logps(model, adapter.collate(records))
            worst = 0.0
            for i, record in enumerate(records):
                encoded = adapter.encode(record)
                worst = max(worst, abs(out.chosen_logps[i].item() - naive_logp(family, model, encoded, encoded.chosen_ids)),
                            abs(out.rejected_logps[i].item() - naive_logp(family, model, encoded, encoded.rejected_ids)))
            ours, theirs = gradients_against_naive(model, adapter, family, records)
            grad = max(float((a - b).abs().max()) for a, b in zip(ours, theirs))
            scale = max(float(b.abs().max()) for b in theirs)
            print(f"{family:14s} {layout:12s} {adapter.layout:7s} {worst:9.1e} {grad:9.1e} {scale:10.1e}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or [*available_families(), *GENERIC])
