#!/usr/bin/env bash
# Wall time of the on-policy commands on the demo's SFT LLaVA, for this checkout and optionally another.
#
#   mm-unidpo demo --study --out runs/study        # or plain `mm-unidpo demo`: its work/ folder is the input
#   scripts/onpolicy_stage_times.sh runs/study/seed-0/work [OTHER_CHECKOUT]
#
# Each command whole (process start-up and model loading included), one torch thread: `generate` on all
# the demo's prompts (n 6, 32 new tokens, as the demo samples), then the VLM judge, with the same model as
# judge, on the samples of the first 100 prompts. OTHER_CHECKOUT (e.g. a `git worktree` of an older
# commit) is timed the same way first, with this checkout's Python environment.
set -euo pipefail
WORK=$(cd "$1" && pwd)
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-$HERE/.venv/bin/python}
OUT=$(mktemp -d)
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1
head -100 "$WORK/prompts.jsonl" > "$OUT/prompts100.jsonl"
now() { date +%s.%N; }
for code in ${2:+"$(cd "$2" && pwd)"} "$HERE"; do
  tag=$(git -C "$code" rev-parse --short HEAD)
  t0=$(now)
  PYTHONPATH=$code "$PY" -m mm_unidpo.cli generate "$WORK/prompts.jsonl" --image-root "$WORK" --model "$WORK/sft" \
      --n 6 --temperature 1.0 --max-new-tokens 32 --batch-size 64 --seed 0 --out "$OUT/$tag-samples.jsonl" > "$OUT/$tag.log" 2>&1
  t1=$(now)
  PYTHONPATH=$code "$PY" -m mm_unidpo.cli generate "$OUT/prompts100.jsonl" --image-root "$WORK" --model "$WORK/sft" \
      --n 6 --temperature 1.0 --max-new-tokens 32 --batch-size 64 --seed 0 --out "$WORK/.times-$tag-100.jsonl" \
      --overwrite >> "$OUT/$tag.log" 2>&1
  root=$(PYTHONPATH=$code "$PY" -m mm_unidpo.cli judge --help | grep -q -- --image-root && echo "--image-root $WORK" || true)
  t2=$(now)
  # shellcheck disable=SC2086  # $root is two words or none
  PYTHONPATH=$code "$PY" -m mm_unidpo.cli judge "$WORK/.times-$tag-100.jsonl" --judge vlm --model "$WORK/sft" $root \
      --out "$OUT/$tag-vlm.jsonl" >> "$OUT/$tag.log" 2>&1
  t3=$(now)
  rm -f "$WORK/.times-$tag-100.jsonl"*
  printf '%s  generate %.1f s  judge vlm (100 prompts) %.1f s\n' "$tag" "$(echo "$t1 - $t0" | bc)" "$(echo "$t3 - $t2" | bc)"
done
rm -rf "$OUT"
