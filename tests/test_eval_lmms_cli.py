"""lmms-eval's own CLI and ours, offline, on a tiny LLaVA saved to disk (plus a LoRA adapter)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch
from PIL import Image

pytest.importorskip("lmms_eval")

from mm_unidpo.evaluation.hallucination import ObjectMatcher, amber_scores, chair_scores, pope_scores  # noqa: E402
from mm_unidpo.testing import tiny  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EVAL_DIR = REPO / "eval"
IMAGE = EVAL_DIR / "data" / "images" / "shapes_1.png"
SAMPLE_TASKS = "mm_pope_sample,mm_chair_sample,mm_amber_g_sample"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """(base checkpoint dir, LoRA adapter dir, the in-memory peft model) of a tiny LLaVA."""
    from peft import LoraConfig, get_peft_model

    root = tmp_path_factory.mktemp("lmms_ckpt")
    model, processor = tiny("llava", seed=0)
    base = root / "base"
    model.save_pretrained(base)
    processor.save_pretrained(base)
    torch.manual_seed(1)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=r".*language_model.*\.(q_proj|v_proj|down_proj)",
                        init_lora_weights=False)  # random B: a LoRA that changes the outputs
    peft_model = get_peft_model(model, config).eval()
    adapter = root / "adapter"
    peft_model.save_pretrained(adapter)
    return base, adapter, peft_model


@pytest.fixture
def offline(tmp_path, monkeypatch):
    env = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "LMMS_EVAL_DATASETS_CACHE": str(tmp_path / "datasets_cache"), "HF_HOME": str(tmp_path / "hf_home")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return {**os.environ, **env}


def _samples(out: Path, task: str) -> list[dict]:
    (file,) = out.rglob(f"*_samples_{task}.jsonl")
    return [json.loads(line) for line in file.read_text().splitlines()]


def test_entry_point_is_installed():
    names = {ep.name: ep.value for ep in entry_points(group="lmms_eval.models")}
    assert names.get("mm_unidpo") == "mm_unidpo.evaluation.lmms.registration:manifest", (
        "reinstall the project (pip install --no-deps -e .) so lmms-eval finds --model mm_unidpo")
    from lmms_eval.models import get_model

    from mm_unidpo.evaluation.lmms.model import MMUniDPO

    assert get_model("mm_unidpo") is MMUniDPO and get_model("mm-unidpo") is MMUniDPO


@pytest.mark.slow
def test_lmms_eval_cli_runs_our_model_by_name_offline(checkpoints, offline, tmp_path):
    base, _, _ = checkpoints
    out = tmp_path / "out"
    script = Path(sys.executable).with_name("lmms-eval")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "lmms_eval"]
    cmd += ["--model", "mm_unidpo", "--model_args", f"pretrained={base},device=cpu", "--tasks", SAMPLE_TASKS,
            "--include_path", str(EVAL_DIR), "--batch_size", "4", "--output_path", str(out), "--log_samples",
            "--verbosity", "WARNING"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=offline, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (results_file,) = out.rglob("*_results.json")  # lmms-eval logs errors and exits 0: the file is the proof
    results = json.loads(results_file.read_text())
    assert results["config"]["model"] == "mm_unidpo"
    assert results["n-samples"]["mm_pope_sample"]["effective"] == 8
    r = results["results"]

    # The numbers lmms-eval reports are our metrics of the answers it logged.
    pope = _samples(out, "mm_pope_sample")
    assert len(pope) == 8 and all(isinstance(s["filtered_resps"], str) for s in pope)
    expected = pope_scores([s["pope_accuracy"]["prediction"] for s in pope], [s["target"] for s in pope])
    assert _same(r["mm_pope_sample"]["pope_accuracy,none"], expected.accuracy)
    assert _same(r["mm_pope_sample"]["pope_yes_ratio,none"], expected.yes_ratio)
    assert _same(r["mm_pope_sample"]["pope_ambiguous_ratio,none"], expected.ambiguous_ratio)
    shapes = ObjectMatcher.from_file(EVAL_DIR / "data" / "shape_synonyms.txt")
    chair = _samples(out, "mm_chair_sample")
    expected = chair_scores([s["chair_s"]["caption"] for s in chair], [s["chair_s"]["objects"] for s in chair], shapes)
    assert _same(r["mm_chair_sample"]["chair_s,none"], expected.chair_s)
    assert _same(r["mm_chair_sample"]["chair_recall,none"], expected.recall)
    amber = _samples(out, "mm_amber_g_sample")
    expected = amber_scores([s["amber_cog"]["response"] for s in amber], [s["amber_cog"]["truth"] for s in amber],
                            [s["amber_cog"]["hallu"] for s in amber], shapes)
    assert _same(r["mm_amber_g_sample"]["amber_cog,none"], expected.cog)
    assert results["higher_is_better"]["mm_amber_g_sample"]["amber_cog"] is False
    assert r["mm_amber_g_sample"]["amber_cog_stderr,none"] == "N/A"  # not bootstrapped 100000 times


def _same(a: float, b: float) -> bool:
    return (a != a and b != b) or a == pytest.approx(b)


@pytest.mark.slow
def test_lora_adapter_changes_outputs(checkpoints):
    from mm_unidpo.evaluation.lmms.model import MMUniDPO

    base, adapter, peft_model = checkpoints
    image = [Image.open(IMAGE).convert("RGB")]
    items = [("Is there a circle in the image?", " Yes", image), ("Describe the image.", " A red circle.", image)]
    plain = MMUniDPO(pretrained=str(base), device="cpu")
    tuned = MMUniDPO(pretrained=str(base), adapter=str(adapter), device="cpu")
    merged = MMUniDPO(pretrained=str(base), adapter=str(adapter), merge_adapter=True, device="cpu")
    in_memory = MMUniDPO(model=peft_model, processor=plain.processor, device="cpu")
    ll_plain, ll_tuned = plain.loglikelihoods(items), tuned.loglikelihoods(items)
    assert all(abs(a[0] - b[0]) > 1e-3 for a, b in zip(ll_plain, ll_tuned))
    assert [x[0] for x in ll_tuned] == pytest.approx([x[0] for x in in_memory.loglikelihoods(items)], abs=1e-4)
    assert [x[0] for x in ll_tuned] == pytest.approx([x[0] for x in merged.loglikelihoods(items)], abs=1e-3)
    gen = {"max_new_tokens": 6, "temperature": 0}
    assert plain.generate(["Describe the image."], [image], gen) != tuned.generate(["Describe the image."], [image], gen)
    assert plain.family == tuned.family == "llava"


@pytest.mark.parametrize("family", ["llava_onevision", "qwen2_vl"])  # processors built without torchvision
def test_other_families_from_disk(family, tmp_path):
    """Every family loads through load_pretrained (Qwen-VL / OneVision processors without torchvision)."""
    from mm_unidpo.evaluation.lmms.model import MMUniDPO

    model, processor = tiny(family, seed=0)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    lm = MMUniDPO(pretrained=str(tmp_path), device="cpu", batch_size=2)
    assert lm.family == family
    image = [Image.open(IMAGE).convert("RGB")]
    in_memory = MMUniDPO(model=model.eval(), processor=processor, device="cpu")
    gen = {"max_new_tokens": 3, "temperature": 0}
    assert lm.generate(["Hi", "Is there a circle?"], [image, image], gen) == \
        in_memory.generate(["Hi", "Is there a circle?"], [image, image], gen)


@pytest.mark.slow
def test_our_cli_runs_and_summarizes(checkpoints, offline, tmp_path, monkeypatch):
    from mm_unidpo.evaluation.lmms.cli import main
    from mm_unidpo.evaluation.lmms.summary import summarize_runs

    base, adapter, _ = checkpoints
    runs = {"base": tmp_path / "base", "lora": tmp_path / "lora"}
    assert main(["--pretrained", str(base), "--tasks", "mm_pope_sample", "--output-path", str(runs["base"]),
                 "--device", "cpu", "--batch-size", "8", "--log-samples", "--verbosity", "WARNING"]) == 0
    # A user's own POPE data, as the README describes: a task folder whose YAML includes ours, a data file
    # next to it and images found through $MM_UNIDPO_IMAGE_ROOT.
    user = tmp_path / "my_tasks"
    user.mkdir()
    (user / "pope.jsonl").write_text((EVAL_DIR / "data" / "pope_sample.jsonl").read_text())
    (user / "my_pope.yaml").write_text(f"include: {EVAL_DIR / '_pope.yaml'}\ntask: my_pope\n"
                                       "dataset_kwargs:\n  data_files:\n    test: pope.jsonl\n"
                                       "generation_kwargs:\n  max_new_tokens: 8\n  temperature: 0\n")
    monkeypatch.setenv("MM_UNIDPO_IMAGE_ROOT", str(EVAL_DIR / "data"))
    assert main(["--pretrained", str(base), "--adapter", str(adapter), "--tasks", "my_pope", "--include-path",
                 str(user), "--output-path", str(runs["lora"]), "--device", "cpu", "--log-samples",
                 "--verbosity", "WARNING"]) == 0
    for out in runs.values():
        assert (out / "summary.md").is_file() and (out / "summary.png").stat().st_size > 1000
        assert "pope_accuracy ↑" in (out / "summary.md").read_text()
    answers = {"base": [s["filtered_resps"] for s in _samples(runs["base"], "mm_pope_sample")],
               "lora": [s["filtered_resps"] for s in _samples(runs["lora"], "my_pope")]}
    assert answers["base"] != answers["lora"]  # the adapter changes what the model says
    text = summarize_runs([runs["base"], runs["lora"]], png=tmp_path / "compare.png")
    assert "| task | metric | base | lora |" in text and (tmp_path / "compare.png").is_file()

    assert main(["summarize", str(runs["base"]), str(runs["lora"]), "--names", "A,B", "--out",
                 str(tmp_path / "cmp")]) == 0
    assert "| task | metric | A | B |" in (tmp_path / "cmp.md").read_text()
    # a failing evaluation is an exit status, not only a log line
    from mm_unidpo.cli import main as cli

    assert cli(["eval", "lmms", "--pretrained", str(tmp_path / "missing"), "--tasks", "mm_pope_sample",
                "--output-path", str(tmp_path / "bad"), "--verbosity", "ERROR"]) == 1


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llava") is None, reason="needs llava-torch")
def test_llava_orig_checkpoint_and_adapter_through_lmms_eval(offline, tmp_path):
    """The original LLaVA code: a checkpoint on disk + a LoRA adapter, by name through lmms-eval's evaluator
    (our CLI), and the adapter applied (log-likelihoods equal the in-memory peft model's)."""
    from peft import LoraConfig, get_peft_model

    from mm_unidpo.evaluation.lmms.cli import main
    from mm_unidpo.evaluation.lmms.model import MMUniDPO

    model, processor = tiny("llava_orig", seed=0)
    base, adapter = tmp_path / "base", tmp_path / "adapter"
    model.save_pretrained(base)
    processor.save_pretrained(base)
    torch.manual_seed(1)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=r"model\.layers\.\d+\.self_attn\.(q_proj|v_proj)",
                        init_lora_weights=False)
    peft_model = get_peft_model(model, config).eval()
    peft_model.save_pretrained(adapter)

    image = [Image.open(IMAGE).convert("RGB")]
    items = [("Is there a circle in the image?", " Yes", image), ("Say hi.", " Hi", [])]
    plain = MMUniDPO(pretrained=str(base), device="cpu")
    tuned = MMUniDPO(pretrained=str(base), adapter=str(adapter), device="cpu", batch_size=2)
    in_memory = MMUniDPO(model=peft_model, processor=processor, device="cpu")
    assert plain.family == tuned.family == "llava_orig"
    ll_plain, ll_tuned = plain.loglikelihoods(items), tuned.loglikelihoods(items)
    assert all(abs(a[0] - b[0]) > 1e-3 for a, b in zip(ll_plain, ll_tuned))
    assert [x[0] for x in ll_tuned] == pytest.approx([x[0] for x in in_memory.loglikelihoods(items)], abs=1e-4)

    out = tmp_path / "out"
    assert main(["--pretrained", str(base), "--adapter", str(adapter), "--tasks", "mm_pope_sample,mm_chair_sample",
                 "--output-path", str(out), "--device", "cpu", "--batch-size", "4", "--log-samples",
                 "--verbosity", "WARNING"]) == 0
    pope = _samples(out, "mm_pope_sample")
    assert len(pope) == 8 and all(isinstance(s["filtered_resps"], str) for s in pope)
    # what lmms-eval logged is what the model class generates for that prompt and image
    docs = [json.loads(line) for line in (EVAL_DIR / "data" / "pope_sample.jsonl").read_text().splitlines()]
    sample = pope[0]
    image = Image.open(EVAL_DIR / "data" / docs[sample["doc_id"]]["image"]).convert("RGB")
    again = tuned.generate([sample["input"]], [[image]], {"max_new_tokens": 8, "temperature": 0, "until": ["\n\n"]})
    assert sample["filtered_resps"].strip() == again[0].strip()
    assert (out / "summary.md").is_file()
