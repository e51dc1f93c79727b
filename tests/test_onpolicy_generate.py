"""`mm-unidpo generate` on tiny models of every family: prompts from prompts-only files and from preference
data, what the sampler hands to the adapter, seeded reproducibility, per-token log-probs against a naive
teacher-forced forward, resuming after `kill -9` (a real subprocess) and after a half-written line, the
settings guard, bad input, and the requests the vLLM backend builds (with a stand-in vllm module)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from PIL import Image

from mm_unidpo.cli import main as cli
from mm_unidpo.data import BadRecordError
from mm_unidpo.onpolicy.generate import generate_samples, main
from mm_unidpo.onpolicy.records import PromptRecord, load_prompts
from mm_unidpo.onpolicy.samplers import GenerateConfig, HFSampler, VLLMSampler
from mm_unidpo.onpolicy.store import settings_path
from mm_unidpo.testing import available_families, tiny

from .helpers import IMAGES, install_fake_vllm, need_images

pytestmark = pytest.mark.usefixtures("single_thread")

ROOT = Path(__file__).resolve().parents[1]


def _image(colour=(200, 30, 30)) -> Image.Image:
    return Image.new("RGB", (40, 32), colour)


def _prompts(family: str, n: int = 3) -> list[PromptRecord]:
    text = family == "causal_lm"
    return [
        PromptRecord(
            ("" if text else "<image>\n") + ("Describe it." if k % 2 else "What is shown here?"),
            [] if text else [_image((40 * k, 90, 200))],
            f"p{k}",
            k,
            None,
        )
        for k in range(n)
    ]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# ---- prompts -----------------------------------------------------------------------------------------


def test_prompts_only_file_and_preference_data(tmp_path):
    need_images("horse.png")
    rows = [
        {"id": "a", "prompt": "Describe the image.", "images": ["horse.png"], "objects": ["horse"]},
        {"id": "b", "question": "<image>\nWhat animal is this?", "image": "horse.png", "answer": "horse"},
        {"prompt": "A text-only prompt."},
    ]
    data = load_prompts(_write_jsonl(tmp_path / "p.jsonl", rows), image_root=IMAGES)
    a, b, c = data.records
    assert a.prompt == "<image>\nDescribe the image." and a.images == ["horse.png"] and a.objects == ["horse"]
    assert a.meta == {"objects": ["horse"]} and a.image_root == str(IMAGES.resolve())
    assert b.prompt == "<image>\nWhat animal is this?" and b.meta == {"answer": "horse"} and b.id == "b"
    assert c.images == [] and c.id is None and c.index == 2
    pairs = _write_jsonl(
        tmp_path / "pairs.jsonl",
        [{"prompt": "Describe.", "chosen": "A horse.", "rejected": "A cow.", "images": ["horse.png"], "id": "x"}],
    )
    (record,) = load_prompts(pairs, image_root=IMAGES).records
    assert record.prompt == "<image>\nDescribe." and record.images == ["horse.png"] and record.id == "x"


@pytest.mark.parametrize(
    "row, reason",
    [
        ({"id": "q", "text": "no prompt field"}, "missing_field"),
        ({"id": "q", "prompt": "   "}, "bad_prompt"),
        ({"id": "q", "prompt": "<image>\n<image>\nTwo slots.", "images": ["horse.png"]}, "placeholder_mismatch"),
        ({"id": "q", "prompt": "Describe.", "images": ["nowhere.png"]}, "missing_image"),
        ({"id": "q", "prompt": "Describe.", "images": ["../../../etc/passwd"]}, "image_outside_root"),
    ],
)
def test_bad_prompts_name_the_record(tmp_path, row, reason):
    need_images("horse.png")
    path = _write_jsonl(tmp_path / "p.jsonl", [{"id": "ok", "prompt": "Fine."}, row])
    with pytest.raises(BadRecordError, match=rf"record 1 \(id='q'\): {reason}"):
        load_prompts(path, image_root=IMAGES)
    data = load_prompts(path, image_root=IMAGES, on_bad_record="skip")
    assert len(data.records) == 1 and data.skips.counts == {reason: 1}


def test_cli_reports_bad_input(tmp_path, capsys):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "fine"}\n{not json\n', encoding="utf-8")
    assert cli(["generate", str(path), "--model", "unused", "--out", str(tmp_path / "s.jsonl")]) == 1
    err = capsys.readouterr().err
    assert "mm-unidpo generate: error: record 1" in err and "invalid_json" in err and "line 2" in err
    assert cli(["generate", str(path), "--model", "m", "--n", "4", "--temperature", "0", "--out", "x"]) == 1
    assert "n > 1 needs sampling" in capsys.readouterr().err


# ---- the hf backend ----------------------------------------------------------------------------------


@pytest.mark.parametrize("family", available_families())
def test_samples_are_the_adapters_generations(family, tmp_path):
    """Every family: the lines hold, per prompt and in order, what the adapter's generate gives for the
    rendered prompts under the batch's seed; the same seed gives the same samples, another seed others."""
    model, processor = tiny(family)
    config = GenerateConfig(n=2, temperature=1.0, max_new_tokens=4, batch_size=3, seed=5)
    sampler = HFSampler(model, processor, config)
    records = _prompts(family)
    lines = generate_samples(records, sampler, config, tmp_path / "a.jsonl", progress=False)
    assert [line["id"] for line in lines] == ["p0", "p1", "p2"] and all(len(line["samples"]) == 2 for line in lines)
    order = sorted(range(3), key=lambda i: -len(sampler.render(records[i])))  # one batch, longest first
    torch.manual_seed(5)
    ids = sampler.adapter.generate(
        model,
        [sampler.render(records[i]) for i in order],
        [r.images for r in (records[i] for i in order)],
        max_new_tokens=4,
        do_sample=True,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        num_return_sequences=2,
    )
    for row, i in enumerate(order):
        for k in range(2):
            tokens = ids[2 * row + k].tolist()
            stop = next((t for t, v in enumerate(tokens) if v in sampler.adapter.end_token_ids), None)
            end = len(tokens) if stop is None else stop + 1
            text = sampler.adapter.tokenizer.decode(tokens[:end], skip_special_tokens=True).strip()
            assert lines[i]["samples"][k] == {
                "text": text,
                "tokens": end,
                "finish": "length" if stop is None else "stop",
            }
    again = generate_samples(records, sampler, config, tmp_path / "b.jsonl", progress=False)
    assert again == lines
    other = generate_samples(
        records,
        sampler,
        GenerateConfig(n=2, max_new_tokens=4, batch_size=3, seed=6),
        tmp_path / "c.jsonl",
        progress=False,
    )
    assert [s["text"] for line in other for s in line["samples"]] != [
        s["text"] for line in lines for s in line["samples"]
    ]


@pytest.mark.parametrize("family", ["causal_lm", "llava"])
def test_logprobs_match_a_teacher_forced_forward(family, tmp_path):
    model, processor = tiny(family)
    config = GenerateConfig(n=2, temperature=0.7, max_new_tokens=5, batch_size=2, seed=1, logprobs=True)
    sampler = HFSampler(model, processor, config)
    records = _prompts(family, 2)
    lines = generate_samples(records, sampler, config, tmp_path / "s.jsonl", progress=False)
    model.eval()
    for record, line in zip(records, lines):
        text = sampler.render(record)
        kwargs = {"images": record.images} if record.images else {}
        enc = processor(
            text=[text],
            return_tensors="pt",
            add_special_tokens=sampler.adapter.hooks.needs_special_tokens(text),
            **kwargs,
        )
        for sample in line["samples"]:
            ids = torch.cat([enc["input_ids"], torch.tensor([sample["token_ids"]])], dim=1)
            inputs = {k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask")}
            with torch.no_grad():
                logits = model(input_ids=ids, **inputs).logits[0].double()
            start = enc["input_ids"].shape[1]
            naive = [
                torch.log_softmax(logits[start - 1 + t], -1)[tok].item() for t, tok in enumerate(sample["token_ids"])
            ]
            assert sample["logprobs"] == pytest.approx(naive, abs=1e-4)
            assert len(sample["logprobs"]) == sample["tokens"]


def test_greedy_and_settings_guard(tmp_path):
    model, processor = tiny("causal_lm")
    greedy = GenerateConfig(n=1, temperature=0.0, max_new_tokens=3, batch_size=2)
    sampler, records, out = HFSampler(model, processor, greedy), _prompts("causal_lm"), tmp_path / "s.jsonl"
    first = generate_samples(records, sampler, greedy, out, progress=False)
    assert generate_samples(records, sampler, greedy, out, progress=False) == first  # finished: nothing redone
    with pytest.raises(ValueError, match="other settings.*max_new_tokens"):
        generate_samples(records, sampler, GenerateConfig(n=1, temperature=0.0, max_new_tokens=4), out)
    changed = [PromptRecord(r.prompt, [], f"new{r.index}", r.index) for r in records]
    redone = generate_samples(changed, sampler, greedy, out, progress=False)  # another input: redone, not reused
    assert [line["id"] for line in redone] == ["new0", "new1", "new2"]
    assert len(generate_samples(changed, sampler, greedy, out, overwrite=True, progress=False)) == 3
    (tmp_path / "other.jsonl").write_text("{}\n")
    with pytest.raises(ValueError, match="no other.jsonl.settings.json"):
        generate_samples(records, sampler, greedy, tmp_path / "other.jsonl")


# ---- resuming ----------------------------------------------------------------------------------------

KILLER = """
import os, signal, sys
from mm_unidpo.onpolicy import generate as g
from mm_unidpo.onpolicy.samplers import HFSampler
calls = {"n": 0}
real = HFSampler.sample
def sample(self, records, seeds):
    calls["n"] += 1
    if calls["n"] == int(os.environ["KILL_AT_BATCH"]):
        os.kill(os.getpid(), signal.SIGKILL)  # kill -9 in the middle of the run
    return real(self, records, seeds)
HFSampler.sample = sample
sys.exit(g.main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def saved_llava(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llava")
    model, processor = tiny("llava")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _run(args: list[str], kill_at: int | None = None) -> subprocess.CompletedProcess:
    # One thread, as the in-process run (the one_thread fixture): bit-identical arithmetic.
    env = {**os.environ, "KILL_AT_BATCH": str(kill_at or 0), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", KILLER, *args], capture_output=True, text=True, env=env, timeout=240)


@pytest.mark.slow
def test_resume_after_kill_9_equals_an_uninterrupted_run(saved_llava, tmp_path):
    need_images("horse.png", "coffee.png", "astronaut.png")
    rows = [
        {"id": f"r{k}", "prompt": "Describe the image." if k % 2 else "What is in this picture?", "images": [name]}
        for k, name in enumerate(["horse.png", "coffee.png", "astronaut.png"] * 2)
    ]
    prompts = _write_jsonl(tmp_path / "prompts.jsonl", rows)
    common = [
        str(prompts),
        "--model",
        str(saved_llava),
        "--image-root",
        str(IMAGES),
        "--n",
        "2",
        "--max-new-tokens",
        "4",
        "--batch-size",
        "2",
        "--dtype",
        "float32",
        "--logprobs",
    ]
    killed = _run([*common, "--out", str(tmp_path / "killed.jsonl")], kill_at=3)
    assert killed.returncode == -9, killed.stderr[-2000:]
    partial = (tmp_path / "killed.jsonl").read_text().splitlines()
    assert len(partial) == 4  # two batches of two prompts were durable before the kill
    with open(tmp_path / "killed.jsonl", "a") as f:
        f.write('{"index": 5, "id": "r5", "prompt": "half a li')  # and a half-written line on top
    resumed = _run([*common, "--out", str(tmp_path / "killed.jsonl")])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "12 samples for 6 prompts" in resumed.stdout
    assert main([*common, "--out", str(tmp_path / "clean.jsonl")]) == 0  # uninterrupted, in this process
    assert (tmp_path / "killed.jsonl").read_text() == (tmp_path / "clean.jsonl").read_text()
    assert json.loads(settings_path(tmp_path / "killed.jsonl").read_text())["logprobs"] is True


# ---- the vLLM backend, with a stand-in vllm module ---------------------------------------------------


def test_vllm_requests(saved_llava, monkeypatch):
    config = GenerateConfig(n=2, temperature=0.8, top_p=0.9, max_new_tokens=7, seed=3, logprobs=True)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ImportError, match="vllm"):
        VLLMSampler(str(saved_llava), config)
    monkeypatch.undo()

    seen = {}

    class LLM:
        def __init__(self, **kwargs):
            seen["llm"] = kwargs

        def generate(self, inputs, params, lora_request=None, use_tqdm=True):
            seen.update(inputs=inputs, params=params, lora=lora_request)
            logprob = types.SimpleNamespace
            output = types.SimpleNamespace(
                text=" A red square. ",
                token_ids=[11, 12],
                finish_reason="stop",
                logprobs=[{11: logprob(logprob=-0.5), 3: logprob(logprob=-1.0)}, {12: logprob(logprob=-0.25)}],
            )
            return [types.SimpleNamespace(outputs=[output] * p.n) for p in params]

    install_fake_vllm(monkeypatch, LLM)

    sampler = VLLMSampler(str(saved_llava), config, adapter="runs/adapter")
    assert seen["llm"]["model"] == str(saved_llava) and seen["llm"]["enable_lora"] is True
    assert seen["llm"]["limit_mm_per_prompt"] == {"image": 1} and seen["llm"]["seed"] == 3
    image = _image()
    records = [PromptRecord("<image>\nDescribe the image.", [image], "a", 0), PromptRecord("Say hi.", [], "b", 1)]
    out = sampler.sample(records, [3, 4])
    with_image, text_only = seen["inputs"]
    _, processor = tiny("llava")
    rendered = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}],
        add_generation_prompt=True,
    )
    assert with_image["prompt"] == rendered and "<image>" in with_image["prompt"]  # vLLM expands the slot itself
    assert isinstance(with_image["multi_modal_data"]["image"], Image.Image)
    ids = text_only["prompt_token_ids"]
    assert ids[0] == processor.tokenizer.bos_token_id and ids.count(processor.tokenizer.bos_token_id) == 1
    assert [p.seed for p in seen["params"]] == [3, 4] and seen["params"][0].logprobs == 0
    assert seen["params"][0].max_tokens == 7 and seen["params"][0].top_p == 0.9 and seen["params"][0].n == 2
    assert seen["lora"] == ("adapter", 1, "runs/adapter")
    assert (
        out[0]
        == [{"text": "A red square.", "tokens": 2, "finish": "stop", "token_ids": [11, 12], "logprobs": [-0.5, -0.25]}]
        * 2
    )
