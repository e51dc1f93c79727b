"""The math evaluation harness end to end with a tiny random-weight causal LM on real GSM8K and MATH-500
items: files, counts, resuming after a crash or a half-written line, results JSON / markdown, the CLI,
and the offline-testable parts of hub loading and the vLLM backend."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import pytest

from mm_unidpo.errors import UsageError
from mm_unidpo.evaluation.math import MathEvalConfig, evaluate_math, load_benchmark, main
from mm_unidpo.evaluation.math.generate import HFGenerator, SamplingConfig, VLLMGenerator
from mm_unidpo.evaluation.math.harness import generations_path, make_generator

from .helpers import install_fake_vllm

MATH_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "math"


@pytest.fixture(scope="module")
def tiny_lm():
    if not (MATH_DATA / "gsm8k_test.jsonl").is_file():
        pytest.skip(f"shared math data not found at {MATH_DATA} (expected ../shared/data/math beside the repo)")
    from mm_unidpo.testing import tiny

    return tiny("causal_lm")


@pytest.fixture
def calls(monkeypatch):
    """Record the prompts of every generate call; ``calls.crash_on = k`` makes the k-th call raise."""
    record = types.SimpleNamespace(prompts=[], crash_on=None)
    real = HFGenerator.generate

    def generate(self, prompts, **kwargs):
        record.prompts.append(list(prompts))
        if record.crash_on == len(record.prompts):
            raise RuntimeError("simulated crash")
        return real(self, prompts, **kwargs)

    monkeypatch.setattr(HFGenerator, "generate", generate)
    return record


def _config(tmp_path, **overrides):
    base = dict(
        benchmarks=("gsm8k", "math500"),
        output_dir=str(tmp_path / "out"),
        data_dir=str(MATH_DATA),
        limit=3,
        max_new_tokens=6,
        batch_size=2,
        progress=False,
    )
    return MathEvalConfig(**{**base, **overrides})


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _n_prompts(calls) -> int:
    return sum(len(p) for p in calls.prompts)


def test_end_to_end_crash_and_resume(tiny_lm, calls, tmp_path):
    model, tokenizer = tiny_lm
    config = _config(tmp_path)
    out = Path(config.output_dir)
    gsm, math = generations_path(out, "gsm8k"), generations_path(out, "math500")

    # 1. crash on the second batch: the first batch (2 of 3 GSM8K items) is already on disk
    calls.crash_on = 2
    with pytest.raises(RuntimeError, match="simulated crash"):
        evaluate_math(model, tokenizer, config)
    first = _lines(gsm)
    assert len(first) == 2 and not math.exists() and not (out / "results.json").exists()

    # 2. rerun: only the missing GSM8K item and the 3 MATH-500 items are generated
    calls.prompts.clear()
    calls.crash_on = None
    results = evaluate_math(model, tokenizer, config)
    assert _n_prompts(calls) == 1 + 3
    records = _lines(gsm)
    assert sorted(r["idx"] for r in records) == [0, 1, 2] and records[:2] == first
    gold = [it.gold for it in load_benchmark("gsm8k", data_dir=MATH_DATA, limit=3)]
    for r in records:
        assert r["gold"] == gold[r["idx"]] and len(r["completions"]) == len(r["predictions"]) == len(r["correct"]) == 1
        assert "Please reason step by step, and put your final answer within \\boxed{}." in r["prompt"]
    assert {r["uid"] for r in _lines(math)} == {it.uid for it in load_benchmark("math500", data_dir=MATH_DATA, limit=3)}

    # results: JSON and markdown shapes (random weights: accuracy is whatever it is, in [0, 1])
    saved = json.loads((out / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    assert saved["config"]["n"] == 1 and saved["config"]["template"] == "cot"
    for name in ("gsm8k", "math500"):
        s = saved["benchmarks"][name]
        assert s["items"] == 3 and s["samples_per_item"] == 1 and 0.0 <= s["accuracy"] <= 1.0
    m5 = saved["benchmarks"]["math500"]
    assert sum(v["items"] for v in m5["by_level"].values()) == 3
    assert sum(v["items"] for v in m5["by_subject"].values()) == 3
    assert "by_level" not in saved["benchmarks"]["gsm8k"]
    md = (out / "results.md").read_text()
    assert "| benchmark | items | accuracy (%) | no answer (%) |" in md and "| gsm8k | 3 |" in md
    assert "## math500 by level" in md and "## math500 by subject" in md

    # 3. a half-written last line (killed mid-write) is dropped and that item generated again
    text = math.read_text(encoding="utf-8")
    cut = text.rstrip("\n").rfind("\n") + 1
    math.write_text(text[: cut + 40], encoding="utf-8")
    calls.prompts.clear()
    evaluate_math(model, tokenizer, config)
    assert _n_prompts(calls) == 1
    assert len(_lines(math)) == 3 and math.read_text().endswith("\n")

    # 4. nothing left to do; more items (--limit 4) generate only the new one
    calls.prompts.clear()
    evaluate_math(model, tokenizer, config)
    assert _n_prompts(calls) == 0
    evaluate_math(model, tokenizer, config, benchmarks=("gsm8k",), limit=4)
    assert _n_prompts(calls) == 1 and len(_lines(gsm)) == 4


def test_other_settings_refused_unless_overwrite(tiny_lm, calls, tmp_path):
    model, tokenizer = tiny_lm
    config = _config(tmp_path, benchmarks=("gsm8k",), limit=2, max_new_tokens=3)
    evaluate_math(model, tokenizer, config)
    with pytest.raises(ValueError, match="max_new_tokens"):
        evaluate_math(model, tokenizer, config, max_new_tokens=4)
    calls.prompts.clear()
    evaluate_math(model, tokenizer, config, max_new_tokens=4, overwrite=True)
    assert _n_prompts(calls) == 2

    # --regrade re-extracts and re-grades the stored completions without generating
    path = generations_path(config.output_dir, "gsm8k")
    records = _lines(path)
    expected = [r["predictions"] for r in records]
    records[0].update(predictions=["tampered"], correct=[True])
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    calls.prompts.clear()
    results = evaluate_math(model, tokenizer, config, max_new_tokens=4, regrade=True)
    assert _n_prompts(calls) == 0 and [r["predictions"] for r in _lines(path)] == expected
    assert results["benchmarks"]["gsm8k"]["items"] == 2


def test_sampling_fewshot_pass_at_k_and_majority(tiny_lm, tmp_path):
    model, tokenizer = tiny_lm
    config = _config(
        tmp_path, benchmarks=("math500",), limit=2, template="fewshot", n=3, temperature=1.0, max_new_tokens=4
    )
    results = evaluate_math(model, tokenizer, config)
    s = results["benchmarks"]["math500"]
    assert s["samples_per_item"] == 3 and set(s["pass@k"]) == {"pass@1", "pass@2", "pass@3"} and "maj@3" in s
    assert s["pass@k"]["pass@1"] == pytest.approx(s["accuracy"])
    for r in _lines(generations_path(config.output_dir, "math500")):
        assert len(r["completions"]) == 3 and set(r["majority"]) == {"answer", "correct"}
        assert r["prompt"].startswith("Question: ") and "\nQuestion:" not in "".join(r["completions"])
    assert "maj@3 (%)" in (Path(config.output_dir) / "results.md").read_text()
    with pytest.raises(ValueError, match="temperature"):
        SamplingConfig(n=4, temperature=0.0)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # peft calls a deprecated transformers helper
def test_cli_with_a_saved_model_and_lora_adapter(tiny_lm, tmp_path, capsys):
    """``--model PATH --adapter DIR`` goes through mm_unidpo.models.loading.load_pretrained for real."""
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    model, tokenizer = tiny_lm
    model_dir, adapter_dir, out = tmp_path / "model", tmp_path / "adapter", tmp_path / "cli"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    base = AutoModelForCausalLM.from_pretrained(model_dir)  # a copy: peft changes the model it wraps
    peft.get_peft_model(base, peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"])).save_pretrained(adapter_dir)

    code = main(
        [
            "--model",
            str(model_dir),
            "--adapter",
            str(adapter_dir),
            "--benchmarks",
            "gsm8k",
            "--data-dir",
            str(MATH_DATA),
            "--limit",
            "2",
            "--max-new-tokens",
            "3",
            "--output-dir",
            str(out),
        ]
    )
    assert code == 0 and "| gsm8k | 2 |" in capsys.readouterr().out
    config = json.loads((out / "run_config.json").read_text())
    assert config["model"] == str(model_dir) and config["adapter"] == str(adapter_dir)
    assert len(_lines(generations_path(out, "gsm8k"))) == 2
    assert json.loads((out / "results.json").read_text())["token_budget"] == 2 * 1 * 3  # questions x n x new tokens
    with pytest.raises(UsageError, match="--data expects NAME=SOURCE"):
        main(["--model", "m", "--data", "nonsense"])


def test_vllm_backend(tiny_lm, monkeypatch, tmp_path):
    model, tokenizer = tiny_lm
    with pytest.raises(ValueError, match="model path"):
        make_generator(model, tokenizer, MathEvalConfig(backend="vllm"))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ImportError, match="vllm"):
        VLLMGenerator("some/model")
    monkeypatch.undo()

    # a stand-in vllm module: checks what the backend hands to vLLM and what it makes of the outputs
    seen = {}

    class LLM:
        def __init__(self, **kwargs):
            seen["llm"] = kwargs

        def get_tokenizer(self):
            return tokenizer

        def generate(self, inputs, params, lora_request=None, use_tqdm=True):
            seen.update(inputs=inputs, params=params, lora=lora_request)
            out = types.SimpleNamespace(text=" 6 The answer is 6.\nQuestion: next")
            return [types.SimpleNamespace(outputs=[out] * params.n) for _ in inputs]

    install_fake_vllm(monkeypatch, LLM)

    gen = VLLMGenerator("some/model", adapter="runs/adapter", seed=3)
    assert seen["llm"]["model"] == "some/model" and seen["llm"]["enable_lora"] is True
    texts = gen.generate(
        ["Question: q\nAnswer:"],
        add_special_tokens=True,
        stop=["\nQuestion:"],
        sampling=SamplingConfig(n=2, temperature=0.7, max_new_tokens=9),
    )
    assert texts == [[" 6 The answer is 6.", " 6 The answer is 6."]]
    assert seen["inputs"][0]["prompt_token_ids"][0] == tokenizer.bos_token_id  # token ids, BOS once
    assert seen["params"].max_tokens == 9 and seen["params"].stop == ["\nQuestion:"]
    assert seen["lora"] == ("adapter", 1, "runs/adapter")


def test_hub_dispatch(monkeypatch):
    """Without a local file each benchmark loads its hub dataset (datasets.load_dataset)."""
    seen = []
    rows = {
        "openai/gsm8k": [{"question": "q", "answer": "x\n#### 5"}],
        "HuggingFaceH4/MATH-500": [
            {"problem": "p", "answer": "\\frac12", "level": 1, "subject": "Algebra", "unique_id": "test/algebra/1.json"}
        ],
        "me/my-aime": [{"problem": "p", "answer": "007", "id": 3}],
    }
    fake = types.ModuleType("datasets")
    fake.load_dataset = lambda hub_id, config=None, split=None: seen.append((hub_id, config, split)) or rows[hub_id]
    monkeypatch.setitem(sys.modules, "datasets", fake)
    assert load_benchmark("gsm8k")[0].gold == "5"
    assert load_benchmark("math500")[0].meta == {"level": 1, "subject": "Algebra"}
    assert load_benchmark("aime24", "me/my-aime", split="train")[0].gold == "7"
    assert seen == [
        ("openai/gsm8k", "main", "test"),
        ("HuggingFaceH4/MATH-500", None, "test"),
        ("me/my-aime", None, "train"),
    ]


def test_limit_scales_the_work_not_just_the_output(tiny_lm, calls, tmp_path, monkeypatch):
    """``--limit`` (per benchmark) cuts prompts, generate calls and gradings in proportion; 0 and
    negative limits are refused (0 used to run every question, -1 all but the last)."""
    from mm_unidpo.evaluation.math import harness

    model, tokenizer = tiny_lm
    built, graded = [], []
    real_build = harness.build_prompt
    monkeypatch.setattr(harness, "build_prompt", lambda q, *a, **k: built.append(q) or real_build(q, *a, **k))
    real_grade = harness.grade_completions
    monkeypatch.setattr(harness, "grade_completions", lambda c, *a: graded.append(c) or real_grade(c, *a))
    for limit in (1, 4):
        built.clear(), graded.clear(), calls.prompts.clear()
        config = _config(tmp_path / str(limit), limit=limit, max_new_tokens=1)
        results = evaluate_math(model, tokenizer, config)
        assert len(built) == len(graded) == _n_prompts(calls) == 2 * limit  # two benchmarks, each limited
        assert len(calls.prompts) == 2 * -(-limit // config.batch_size)  # ceil: no batch beyond the limit
        assert [results["benchmarks"][b]["items"] for b in config.benchmarks] == [limit, limit]
        assert results["token_budget"] == 2 * limit * config.max_new_tokens
    for bad in (0, -1):
        with pytest.raises(ValueError, match=f"--limit must be >= 1 \\(got {bad}\\)"):
            _config(tmp_path, limit=bad)
        with pytest.raises(ValueError, match="--limit must be >= 1"):
            load_benchmark("gsm8k", data_dir=MATH_DATA, limit=bad)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="the CPU default")
def test_dtype_auto_is_float32_without_a_gpu(tiny_lm, tmp_path):
    """A bf16 checkpoint loads in float32 on CPU under --dtype auto (bf16 ran ~4x slower per question)."""
    import copy

    import torch

    model, tokenizer = tiny_lm
    copy.deepcopy(model).to(torch.bfloat16).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    for dtype, expected in (("auto", torch.float32), ("bfloat16", torch.bfloat16)):
        generator = make_generator(str(tmp_path), None, MathEvalConfig(), dtype=dtype)
        assert next(generator.model.parameters()).dtype == expected
