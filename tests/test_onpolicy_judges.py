"""The judges of `mm-unidpo judge` on tiny models, each against a naive computation: the object judge's
scores by hand, rule scorers, a text reward model against an unpadded forward, the process reward model's
10 × min step reward against a hand-written softmax at the separator positions of one unbatched forward,
the VLM judge's yes/no log-likelihoods against a naive per-claim forward; claim splitting; the judge
command's resume after `kill -9`, its settings guard and its errors naming the line or record."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from mm_unidpo.evaluation.math.benchmarks import COT_INSTRUCTION
from mm_unidpo.cli import main as cli
from mm_unidpo.onpolicy.judge import judge_samples, main
from mm_unidpo.onpolicy.judges import VLMJudge, make_judge
from mm_unidpo.onpolicy.judges.claims import ClaimSplitter, parse_claim_lines, split_claims
from mm_unidpo.onpolicy.judges.objects import object_matcher, object_score
from mm_unidpo.onpolicy.records import PromptRecord
from mm_unidpo.testing import available_families, tiny, tiny_tokenizer

from .helpers import naive_logp

pytestmark = pytest.mark.usefixtures("single_thread")

ROOT = Path(__file__).resolve().parents[1]


def _record(prompt="What is in the image?", images=(), **meta) -> PromptRecord:
    return PromptRecord(prompt, list(images), "r0", 0, None, dict(meta))


# ---- the object judge and rule judges ----------------------------------------------------------------

def test_object_judge_by_hand(tmp_path):
    judge = make_judge("objects")  # COCO objects and synonyms
    record = _record(objects=["dog", "dining table"])
    (a, b, c, d) = judge([(record, "A dog lies under a dining table."), (record, "A puppy, two cats and a table."),
                          (record, "Dogs. A dog."), (record, "")])
    assert a == {"score": 10.0, "hallucinated": []}  # "dining table" is one object, not a table
    # puppy = dog (+1), table = dining table (+1), cats are not there: 10 * 2 / (2 + 2 * 1)
    assert b["score"] == pytest.approx(5.0) and b["hallucinated"] == ["cat"]
    assert c["score"] == pytest.approx(10 * 1 / (2 + 2)) and c["hallucinated"] == ["dog"]  # a repeat
    assert d["score"] == 0.0
    colours = make_judge("objects", vocabulary="star,moon,cross", colours="red,blue")
    truth = _record(objects="red star; blue moon")
    scores = [j["score"] for j in colours([(truth, "A red star and a red moon."), (truth, "A blue moon, a cross.")])]
    assert scores == pytest.approx([10 * 1.5 / 2, 10 * 1 / (2 + 2)])
    (tmp_path / "syn.txt").write_text("star, starlet\nmoon\n")
    (tmp_path / "syn.json").write_text(json.dumps({"star": ["starlet"], "moon": []}))
    for vocabulary in (str(tmp_path / "syn.txt"), str(tmp_path / "syn.json"), {"star": ["starlet"], "moon": []}):
        assert object_score("Two starlets.", [(None, "star")], object_matcher(vocabulary))[0] == 10.0
    with pytest.raises(ValueError, match=r"record 0 \(id='r0'\): no ground-truth objects \(field 'objects'\)"):
        judge([(_record(), "A dog.")])
    with pytest.raises(FileNotFoundError):
        object_matcher("missing/synonyms.txt")


def test_demo_judge_is_the_object_judge():
    from mm_unidpo.demo.judge import caption_score
    from mm_unidpo.demo.world import COLOURS, OBJECTS

    judge = make_judge("objects", vocabulary=list(OBJECTS), colours=list(COLOURS))
    truth = [("red", "star"), ("blue", "square")]
    for text in ("A red star and a blue square.", "A green star, a star and a white moon.", "Squares. A red cross."):
        record = _record(objects=[f"{c} {n}" for c, n in truth])
        assert judge([(record, text)])[0]["score"] == caption_score(text, truth)


def test_rule_judges():
    judge = make_judge("mm_unidpo.demo.judge:score_caption")  # a (record, response) function, by name
    assert judge([(_record(objects=["red star"]), "A red star.")]) == [{"score": 10.0}]
    with pytest.raises(ValueError, match="takes no option"):
        make_judge("objects", model="x")
    with pytest.raises(ValueError, match="unknown judge 'nope'"):
        make_judge("nope")


# ---- a text reward model -----------------------------------------------------------------------------

def test_reward_model_judge_against_an_unbatched_forward(reward_model_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    judge = make_judge("reward_model", model=str(reward_model_dir), batch_size=2, device="cpu")
    record = _record("<image>\nWhat is on the table?", images=[Image.new("RGB", (8, 8))])
    responses = ["A cup.", "A cup of coffee on a wooden table.", "Nothing."]
    scores = [j["score"] for j in judge([(record, r) for r in responses])]
    model = AutoModelForSequenceClassification.from_pretrained(reward_model_dir).eval()
    tok = AutoTokenizer.from_pretrained(reward_model_dir)
    for response, score in zip(responses, scores):
        text = tok.apply_chat_template([{"role": "user", "content": "What is on the table?"},
                                        {"role": "assistant", "content": response}], tokenize=False)
        with torch.no_grad():
            naive = model(**tok(text, return_tensors="pt", add_special_tokens=False)).logits[0, 0].item()
        assert score == pytest.approx(naive, abs=1e-5)


def _token_counter(model) -> list[int]:
    """Tokens (not padding) each forward of `model` runs, recorded by a pre-hook."""
    counts: list[int] = []
    pad = model.config.pad_token_id
    model.register_forward_pre_hook(lambda _, __, kwargs: counts.append(int((kwargs["input_ids"] != pad).sum())),
                                    with_kwargs=True)
    return counts


def test_reward_model_shares_each_prompt_across_its_samples(reward_model_dir, caplog):
    from mm_unidpo.onpolicy.judges import shared_prompt
    from mm_unidpo.onpolicy.judges.scorers import RewardModelScorer

    scorer = RewardModelScorer(str(reward_model_dir), batch_size=2, device="cpu")
    a, b, c = _record("What is on the table? Look closely."), _record("Name a colour."), _record("Alone?")
    # different lengths, two prompts interleaved, one prompt with one sample, a common start past the prompt
    items = [(a, "A cup."), (b, "Red, I think, or maybe a deep blue like the sea."), (a, "A cup of coffee on a table."),
             (c, "Yes."), (a, "A cup of tea and two books, one of them open."), (b, "Red.")]
    counts = _token_counter(scorer.model)
    for side in ("left", "right"):
        scorer.tokenizer.padding_side = side
        shared = scorer.score_all(items)
        shared_tokens, counts[:] = sum(counts), []
        reference = scorer.score_one_by_one(items)
        assert max(abs(x - y) for x, y in zip(shared, reference)) <= 1e-5, side
        assert shared_tokens < 0.7 * sum(counts), (side, shared_tokens, counts)  # a prompt once, not per sample
        counts[:] = []
    reference_judge = make_judge("reward_model", model=str(reward_model_dir), device="cpu", share_prompt=False)
    assert [j["score"] for j in reference_judge(items)] == pytest.approx(reference, abs=1e-6)
    single = scorer.score_all([(c, "Yes.")])  # a prompt of one sample: no gain, the same score
    assert abs(single[0] - shared[3]) <= 1e-5
    caplog.set_level("INFO")
    no_cache = RewardModelScorer(str(reward_model_dir), batch_size=2, device="cpu")
    no_cache.model.forward = lambda input_ids=None, attention_mask=None: type(no_cache.model).forward(
        no_cache.model, input_ids=input_ids, attention_mask=attention_mask)
    assert shared_prompt.cache_argument(no_cache.model) is None
    assert no_cache.score_all(items) == pytest.approx(shared, abs=1e-5)
    assert "takes no past cache: one forward per response" in caplog.text


# ---- the process reward model ------------------------------------------------------------------------

def _prm_dir(folder: Path, *, num_labels: int = 2, head: bool = True, auto_map: bool = False) -> Path:
    from transformers import Qwen2Config, Qwen2ForTokenClassification, Qwen2Model

    tok = tiny_tokenizer("qwen2_vl")
    tok.add_special_tokens({"additional_special_tokens": ["<extra_0>"]})
    config = Qwen2Config(vocab_size=704, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, num_labels=num_labels, pad_token_id=tok.pad_token_id)
    torch.manual_seed(1)
    (Qwen2ForTokenClassification if head else Qwen2Model)(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    if auto_map:
        saved = json.loads((folder / "config.json").read_text())
        saved["auto_map"] = {"AutoModel": "modeling_qwen2_rm.Qwen2ForProcessRewardModel"}
        (folder / "config.json").write_text(json.dumps(saved))
    return folder


@pytest.fixture(scope="module")
def prm_dir(tmp_path_factory):
    return _prm_dir(tmp_path_factory.mktemp("prm"))


def test_prm_score_is_ten_times_the_minimum_step_reward(prm_dir):
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    question = "Janet has 16 eggs and eats 3. How many are left?"
    record = _record(question, answer="She eats 3.\n#### 13")
    responses = ["She has 16 eggs.\n\nShe eats 3, so 16 - 3 = 13.\n\nThe answer is \\boxed{13}.",
                 "16 - 3 = 12.\n\n\n\nSo \\boxed{12}.", "The answer is 13."]
    judge = make_judge("prm", model=str(prm_dir), batch_size=2, device="cpu", dtype="float32", benchmark="gsm8k")
    judgements = judge([(record, r) for r in responses])

    model = AutoModelForTokenClassification.from_pretrained(prm_dir).eval()
    tok = AutoTokenizer.from_pretrained(prm_dir)
    separator = tok.convert_tokens_to_ids("<extra_0>")
    for response, judgement in zip(responses, judgements):
        steps = [s.strip() for s in response.split("\n\n") if s.strip()]
        text = tok.apply_chat_template([{"role": "system", "content": COT_INSTRUCTION}, {"role": "user", "content": question},
                                        {"role": "assistant", "content": "<extra_0>".join(steps) + "<extra_0>"}],
                                       tokenize=False)
        ids = tok(text)["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0].tolist()
        rewards = [math.exp(logits[t][1]) / (math.exp(logits[t][0]) + math.exp(logits[t][1]))
                   for t, token in enumerate(ids) if token == separator]
        assert len(rewards) == len(steps) == judgement["steps"]
        assert judgement["step_rewards"] == pytest.approx(rewards, abs=1e-5)
        assert judgement["score"] == pytest.approx(10 * min(rewards), abs=1e-4)
    assert [j["correct"] for j in judgements] == [True, False, True] and judgements[1]["answer"] == "12"
    assert judgements[0]["gold"] == "13"


def test_prm_shares_each_question_across_its_responses(prm_dir, monkeypatch):
    from mm_unidpo.onpolicy.judges import shared_prompt

    prefixes: list[tuple[int, int]] = []
    common = shared_prompt.common_prefix
    monkeypatch.setattr(shared_prompt, "common_prefix",
                        lambda rows: prefixes.append((len(rows), common(rows))) or common(rows))
    questions = [_record("Janet has 16 eggs and eats 3. How many are left?"), _record("What is 2 + 2?"),
                 _record("1 + 1?")]
    responses = ["She has 16 eggs.\n\nShe eats 3, so 16 - 3 = 13.\n\nThe answer is \\boxed{13}.",
                 "She has 16 eggs.\n\nSo \\boxed{12}.", "16 - 3 = 13, the answer.", "", "4", "2 + 2 = 4.\n\nYes."]
    items = [(questions[0], r) for r in responses[:4]] + [(questions[1], r) for r in responses[4:]] + [
        (questions[2], "2.")]
    shared = make_judge("prm", model=str(prm_dir), batch_size=3, device="cpu", dtype="float32")(items)
    reference = make_judge("prm", model=str(prm_dir), batch_size=3, device="cpu", dtype="float32",
                           share_prompt=False)(items)
    for ours, theirs in zip(shared, reference):
        assert ours["steps"] == theirs["steps"] and len(ours["step_rewards"]) == len(theirs["step_rewards"])
        assert max((abs(x - y) for x, y in zip(ours["step_rewards"], theirs["step_rewards"])), default=0) <= 1e-5
        assert abs(ours["score"] - theirs["score"]) <= 1e-4
    assert shared[3]["steps"] == 0 and len(shared[3]["step_rewards"]) == 1  # an empty response: one separator
    # one prefix per question, through the system turn, the question and the assistant's header (and more)
    assert [n for n, _ in prefixes] == [4, 2, 1] and all(length > 40 for _, length in prefixes), prefixes


def test_prm_loading_guards(tmp_path):
    with pytest.raises(ValueError, match="no weights for"):
        make_judge("prm", model=str(_prm_dir(tmp_path / "headless", head=False)), device="cpu")
    with pytest.raises(ValueError, match="3 labels"):
        make_judge("prm", model=str(_prm_dir(tmp_path / "three", num_labels=3)), device="cpu")
    with pytest.raises(ValueError, match="--trust-remote-code"):
        make_judge("prm", model=str(_prm_dir(tmp_path / "custom", auto_map=True)), device="cpu")
    with pytest.raises(ValueError, match="no step separator"):
        make_judge("prm", model=str(_prm_dir(tmp_path / "sep")), device="cpu", separator="<extra_9>")
    with pytest.raises(ValueError, match="unknown benchmark"):
        make_judge("prm", model=str(tmp_path / "sep"), device="cpu", benchmark="nope")


# ---- claims and the VLM judge ------------------------------------------------------------------------

def test_rule_claims():
    assert split_claims("A red star is on the left; a blue moon is below it, and there is a cross. Yes!") == [
        "A red star is on the left", "a blue moon is below it", "there is a cross.", "Yes!"]
    assert split_claims("A green square, a purple cross and two yellow moons.") == [
        "A green square", "a purple cross", "two yellow moons."]
    assert split_claims("  \n ") == [] and split_claims("One claim") == ["One claim"]
    assert parse_claim_lines("1. A dog.\n- A ball\n\n* It is red.\n") == ["A dog.", "A ball", "It is red."]


def test_claim_splitter_lists_claims_with_an_lm(monkeypatch):
    model, tok = tiny("causal_lm")
    splitter = ClaimSplitter(model, tok, batch_size=2)
    prompts = []

    def generate(model, texts, images, **settings):
        prompts.extend(texts)
        answers = ["- A dog.\n- A red ball.", "   "]  # the second lists nothing: the rule splitter takes over
        return [tok(a, add_special_tokens=False)["input_ids"] for a in answers[:len(texts)]]

    monkeypatch.setattr(splitter.adapter, "generate", generate)
    out = splitter(["A dog plays with a red ball.", "It is sunny, and warm."])
    assert out == [(["A dog.", "A red ball."], False), (["It is sunny", "warm."], True)]
    assert "Description: A dog plays with a red ball." in prompts[0]


VLM_FAMILIES = [f for f in ("llava", "qwen2_vl", "llava_orig") if f in available_families()]


@pytest.mark.parametrize("family", VLM_FAMILIES)
def test_vlm_judge_yes_no_against_a_naive_per_claim_forward(family):
    model, processor = tiny(family)
    judge = VLMJudge(model, processor, batch_size=3)
    image = Image.new("RGB", (48, 40), (20, 160, 60))
    record = _record("<image>\nDescribe the image.", images=[image])
    responses = ["A green square fills the picture; it is bright, and there is a dog. The sky is blue.", "Nothing."]
    judgements = judge([(record, r) for r in responses])
    for response, judgement in zip(responses, judgements):
        claims = split_claims(response)
        assert judgement["claims"] == claims and judgement["n_claims"] == len(claims)
        naive = []
        for claim in claims:
            question = judge.claim_prompt(record, claim)
            assert question.prompt.startswith("<image>\n") and claim in question.prompt
            encoded = judge.adapter.encode_prompt(question)
            yes, no = (judge.adapter.response_ids(encoded, answer) for answer in ("Yes", "No"))
            assert judge.adapter.tokenizer.decode(yes, skip_special_tokens=True).strip() == "Yes"
            naive.append(naive_logp(family, model, encoded, yes) - naive_logp(family, model, encoded, no))
        assert judgement["margins"] == pytest.approx(naive, abs=1e-4)
        accepted = [m > 0 for m in naive]
        assert judgement["accepted"] == accepted and judgement["n_accepted"] == sum(accepted)
        assert judgement["score"] == pytest.approx(10 * sum(accepted) / len(claims))
    assert judge([(record, "")])[0] == {"score": 0.0, "claims": [], "accepted": [], "margins": [], "n_claims": 0,
                                        "n_accepted": 0}


# ---- the judge command -------------------------------------------------------------------------------

def _samples(path: Path, n: int = 5) -> Path:
    lines = [{"index": k, "id": f"s{k}", "prompt": f"Prompt {k}", "images": [], "image_root": None,
              "meta": {"objects": ["red star"]},
              "samples": [{"text": t} for t in ("A red star.", "A moon and a red star.", "", "A blue star.")]}
             for k in range(n)]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


KILLING_SCORER = """
import os, signal
from mm_unidpo.demo.judge import score_caption
def score(record, response):
    if record.id == os.environ.get("KILL_AT_ID"):
        os.kill(os.getpid(), signal.SIGKILL)
    return score_caption(record, response)
"""


@pytest.mark.slow
def test_judge_resumes_after_kill_9(tmp_path):
    samples = _samples(tmp_path / "samples.jsonl")
    (tmp_path / "killing_scorer.py").write_text(KILLING_SCORER)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}", "KILL_AT_ID": "s3"}
    args = [sys.executable, "-m", "mm_unidpo.cli", "judge", str(samples), "--judge", "killing_scorer:score",
            "--chunk-size", "2", "--out", str(tmp_path / "killed.jsonl")]
    killed = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert [json.loads(line)["id"] for line in (tmp_path / "killed.jsonl").read_text().splitlines()] == ["s0", "s1"]
    resumed = subprocess.run(args, capture_output=True, text=True, env={**env, "KILL_AT_ID": ""}, timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    sys.path.insert(0, str(tmp_path))
    try:
        assert main([str(samples), "--judge", "killing_scorer:score", "--out", str(tmp_path / "clean.jsonl")]) == 0
    finally:
        sys.path.remove(str(tmp_path))
    assert (tmp_path / "killed.jsonl").read_text() == (tmp_path / "clean.jsonl").read_text()
    line = json.loads((tmp_path / "clean.jsonl").read_text().splitlines()[0])
    assert [s["score"] for s in line["samples"]] == [10.0, pytest.approx(10 / 3), None, 5.0]


def test_judge_command_guards_and_errors(tmp_path, capsys):
    samples = _samples(tmp_path / "samples.jsonl", 2)
    out = tmp_path / "scored.jsonl"
    assert main([str(samples), "--judge", "objects", "--out", str(out)]) == 0
    assert "judged 6 samples of 2 prompts" in capsys.readouterr().out
    assert cli(["judge", str(samples), "--judge", "objects", "--judge-arg", "hallucination_cost=3", "--out", str(out)]) == 1
    assert "other settings" in capsys.readouterr().err
    assert cli(["judge", str(samples), "--judge", "objects", "--model", "m", "--out", str(tmp_path / "x.jsonl")]) == 2
    assert "takes no --model" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text(samples.read_text().splitlines()[0] + "\n{broken\n")
    assert cli(["judge", str(bad), "--judge", "objects", "--out", str(tmp_path / "y.jsonl")]) == 1
    assert "bad.jsonl, line 2: not JSON" in capsys.readouterr().err
    bad.write_text(json.dumps({"index": 0, "prompt": "p", "samples": "text"}) + "\n")
    assert cli(["judge", str(bad), "--judge", "objects", "--out", str(tmp_path / "y.jsonl")]) == 1
    assert "line 1: 'samples' must be a list" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"record 0 \(id='s0'\): the judge gave nan"):
        judge_samples(samples, lambda items: [{"score": float("nan")} for _ in items], tmp_path / "z.jsonl")
