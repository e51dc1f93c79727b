#!/usr/bin/env python
"""Record, or compare against a recording, every family's log-probs and gradients in every layout.

    python scripts/record_logps.py record before.pt          # at the old commit
    python scripts/record_logps.py compare before.pt         # at the new one: max differences per case

For refactors of the model layer, which must not change numbers: three pairs (one image each for the
VLMs, the shared photos), each family that `mm_unidpo.testing.available_families()` builds, in the plain
layout padded right and left, packed in one row and one pair a row, and with the materialised head;
the gradient of Σ chosen − ½ Σ rejected. Only the public adapter API is used, so the recording can come
from any version. `compare` exits 1 if lengths, prompt ids or messages differ, or a log-prob by > 1e-4.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from mm_unidpo.data import PreferenceRecord
from mm_unidpo.models import get_adapter
from mm_unidpo.testing import available_families, tiny

IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "images"
PAIRS = [
    ("Describe the picture.", "A person in a suit.", "A dog on a beach with a ball."),
    ("What is shown?", "An astronaut", "A cat"),
    ("Any text?", "No text at all here, really.", "Yes."),
]
LAYOUTS = {
    "plain-right": {"shared_prefix": False},
    "plain-left": {"shared_prefix": False, "padding_side": "left"},
    "packed": {},
    "packed-rows": {"pack_pairs": False},
    "packed-nochunk": {"head_chunk_size": None},
    "plain-nochunk": {"shared_prefix": False, "head_chunk_size": None},
}


def record(images: Path = IMAGES) -> dict:
    photos = sorted(p for p in images.iterdir() if p.suffix in (".png", ".jpg"))[:2]
    out = {}
    for family in available_families():
        model, processor = tiny(family, seed=0)
        model.eval()
        records = [
            PreferenceRecord(
                "<image>\n" * (family != "causal_lm") + q,
                c,
                r,
                id=f"r{k}",
                index=k,
                images=[] if family == "causal_lm" else [str(photos[k % 2])],
            )
            for k, (q, c, r) in enumerate(PAIRS)
        ]
        for layout, options in LAYOUTS.items():
            adapter = get_adapter(model, processor, **options)
            model.zero_grad()
            logps = adapter.sequence_logps(model, adapter.collate(records))
            (logps.chosen_logps.sum() - 0.5 * logps.rejected_logps.sum()).backward()
            out[(family, layout)] = {
                "chosen": logps.chosen_logps.detach(),
                "rejected": logps.rejected_logps.detach(),
                "lengths": torch.stack([logps.chosen_lengths, logps.rejected_lengths]),
                "grads": {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None},
                "prompt_ids": adapter.encode(records[0]).prompt_ids,
                "messages": adapter.messages(records[0]),
            }
    return out


def compare(before: dict, after: dict) -> bool:
    ok = True
    for key in sorted(set(before) & set(after)):
        a, b = before[key], after[key]
        logp = max((a[k] - b[k]).abs().max().item() for k in ("chosen", "rejected"))
        same = (
            torch.equal(a["lengths"], b["lengths"])
            and a["prompt_ids"] == b["prompt_ids"]
            and a["messages"] == b["messages"]
            and set(a["grads"]) == set(b["grads"])
        )
        grad = (
            max(
                ((a["grads"][n] - b["grads"][n]).abs().max() / a["grads"][n].abs().max().clamp(min=1e-12)).item()
                for n in a["grads"]
            )
            if same
            else float("nan")
        )
        ok &= same and logp <= 1e-4
        print(
            f"{key[0]:16s} {key[1]:15s} log-prob max|diff| {logp:.2e}  gradient max rel diff {grad:.2e}  "
            f"lengths, prompt ids, messages {'same' if same else 'DIFFER'}"
        )
    only = sorted({family for family, _ in set(before) ^ set(after)})
    if only:
        print(f"families in one recording only (not compared): {', '.join(only)}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("record", "compare"))
    parser.add_argument("file")
    parser.add_argument("--images", type=Path, default=IMAGES, help=f"the shared photos (default {IMAGES})")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.action == "record":
        torch.save(record(args.images), args.file)
        return 0
    return 0 if compare(torch.load(args.file, weights_only=False), record(args.images)) else 1


if __name__ == "__main__":
    sys.exit(main())
