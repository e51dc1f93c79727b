"""What the pre-flight pass costs before training, and what its cache saves on a rerun.

    python scripts/bench_preflight.py --records 2000 --workers 0,2

LLaVA-1.5-shaped preprocessing (336-px CLIP image processor, 576 image tokens, the LLaVA chat template) on
the shared test photos cycled with distinct texts; the model behind the adapter is tiny (pre-flight never
runs it). Side by side in one run: record hashing, the pass in process and in DataLoader workers (no
cache), then a cold pass that writes the cache and the warm rerun (hashing included) that reads it.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

PHOTOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "images"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--workers", default="0,2", help="comma-separated worker counts to compare")
    parser.add_argument("--photos", default=str(PHOTOS))
    args = parser.parse_args()

    import torch

    from mm_unidpo.data import PreferenceRecord, record_digests
    from mm_unidpo.models import get_adapter
    from mm_unidpo.testing import tiny
    from mm_unidpo.train.preflight import preflight

    torch.set_num_threads(1)
    photos = sorted(p.name for p in Path(args.photos).iterdir() if p.suffix in (".png", ".jpg"))
    model, processor = tiny("llava", vision_config={"image_size": 336, "patch_size": 14})
    adapter = get_adapter(model, processor, max_length=2048)
    records = [PreferenceRecord("<image>\nDescribe the picture in detail.", f"It shows item {i}: " + "a scene. " * 20,
                                "A red bus on a sunny street.", images=[photos[i % len(photos)]],
                                image_root=args.photos, id=f"r{i}", index=i) for i in range(args.records)]
    rows = []

    def timed(name, fn):
        start = time.perf_counter()
        out = fn()
        rows.append((name, time.perf_counter() - start))
        return out

    digests = timed("hash records (sha256 of texts + image bytes)", lambda: record_digests(records, progress=False))
    for workers in (int(w) for w in args.workers.split(",")):
        timed(f"pre-flight, no cache, workers={workers}", lambda: preflight(records, adapter, workers=workers))
    with tempfile.TemporaryDirectory() as cache:
        timed("pre-flight, cold cache (encode + write)", lambda: preflight(records, adapter, digests=digests,
                                                                          cache_dir=cache, workers=0))
        warm = timed("rerun: hash + pre-flight from the cache", lambda: preflight(
            records, adapter, digests=record_digests(records, progress=False), cache_dir=cache))
        assert warm.encoded == 0 and warm.cached == len(records)
    base = rows[1][1]
    print(f"{len(records)} records, {os.cpu_count()} CPUs, torch {torch.__version__}")
    print("| step | seconds | records/s | vs in-process pass |\n|---|---|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.2f} | {len(records) / seconds:.0f} | {base / seconds:.2f}x |")
    print(json.dumps({name: round(seconds, 3) for name, seconds in rows}))


if __name__ == "__main__":
    main()
