"""Write MMHal-Bench's response file from an lmms-eval run of an ``_mmhal.yaml`` task.

    python eval/mmhal_export.py runs/eval/x/<model>/<date>_samples_my_mmhal.jsonl \\
        MMHal-Bench/response_template.json runs/eval/x/mmhal_response.json

The template's entries get ``model_answer`` from the samples (matched by the documents' ``id``: the
entry's index in the template); the output goes to MMHal-Bench's own ``eval_gpt4.py --response ...``.
Run lmms-eval with ``--log_samples`` so that the samples file exists.
"""

from __future__ import annotations

import json
import sys


def export(samples_path: str, template_path: str, out_path: str) -> int:
    with open(template_path, encoding="utf-8") as f:
        template = json.load(f)
    answers = {}
    with open(samples_path, encoding="utf-8") as f:
        for line in f:
            item = json.loads(line)["mmhal_answered"]
            answers[int(item["id"])] = item["model_answer"]
    missing = [k for k in range(len(template)) if k not in answers]
    if missing:
        raise SystemExit(f"no answer for template entries {missing[:10]}{'...' if len(missing) > 10 else ''}")
    for k, entry in enumerate(template):
        entry["model_answer"] = answers[k]
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(template, f, indent=2, ensure_ascii=False)
    return len(template)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    print(f"wrote {export(*sys.argv[1:])} answers to {sys.argv[3]}")
