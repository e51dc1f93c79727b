"""The data engine (`generate`, `judge`, `pairs`, `iterate`) under bad input and faults, one test per kind
of finding of issue 25: stale output passed off as new, lost work, late crashes, silent acceptance, trust,
unclear messages. A counting stand-in sampler and rule judges keep them fast; the model-side checks use
the tiny text model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from mm_unidpo.cli import main as cli
from mm_unidpo.data import BadRecordError
from mm_unidpo.onpolicy.generate import generate_samples
from mm_unidpo.onpolicy.judge import judge_samples, read_samples
from mm_unidpo.onpolicy.records import PromptData, PromptRecord, check_prompts, load_prompts
from mm_unidpo.onpolicy.samplers import GenerateConfig, HFSampler
from mm_unidpo.onpolicy.store import ResumableLines, read_json, read_settings, write_json
from mm_unidpo.testing import tiny

pytestmark = pytest.mark.usefixtures("single_thread")

CONFIG = GenerateConfig(n=2, temperature=1.0, max_new_tokens=4, batch_size=2)


class CountingSampler:
    """Stands in for a model: a sample names its prompt and seed; `calls` counts the prompts sampled."""

    def __init__(self) -> None:
        self.calls = 0

    def render(self, record: PromptRecord) -> str:
        return str(record.prompt)

    def sample(self, records, seeds):
        self.calls += len(records)
        return [
            [{"text": f"{r.prompt} #{seed}.{k}", "tokens": 1, "finish": "stop"} for k in range(2)]
            for r, seed in zip(records, seeds)
        ]


def _rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _image(path: Path, colour=(200, 30, 30)) -> Path:
    Image.new("RGB", (16, 12), colour).save(path)
    return path


def _prompts(tmp_path: Path, texts: list[str], images: bool = False) -> Path:
    if images:
        _image(tmp_path / "a.png")
    rows = [{"id": f"q{k}", "prompt": t, **({"images": ["a.png"]} if images else {})} for k, t in enumerate(texts)]
    return _rows(tmp_path / "prompts.jsonl", rows)


def _generate(path: Path, out: Path, sampler: CountingSampler, **kw) -> list[dict]:
    records = load_prompts(path, decode=True, **kw).records
    return generate_samples(records, sampler, CONFIG, out, progress=False, source=path)


# ---- stale output --------------------------------------------------------------------------------------


def test_a_changed_input_is_redone_never_reused(tmp_path):
    out, sampler = tmp_path / "s.jsonl", CountingSampler()
    prompts = _prompts(tmp_path, ["one", "two", "three"], images=True)
    first = _generate(prompts, out, sampler)
    assert sampler.calls == 3 and all(line["input_sha256"] for line in first)
    assert read_settings(out)["input"]["file"] == str(prompts.resolve()) and read_settings(out)["finished"]
    _generate(prompts, out, sampler)
    assert sampler.calls == 3  # the same input: nothing redone
    _prompts(tmp_path, ["one", "TWO", "three"], images=True)  # one prompt edited
    lines = _generate(prompts, out, sampler)
    assert sampler.calls == 4 and lines[1]["samples"][0]["text"].startswith("<image>\nTWO")
    assert [line["samples"] for line in (lines[0], lines[2])] == [first[0]["samples"], first[2]["samples"]]
    _image(tmp_path / "a.png", (0, 0, 255))  # the same paths, other image bytes: every prompt redone
    _generate(prompts, out, sampler)
    assert sampler.calls == 7
    _rows(prompts, [json.loads(t) for t in prompts.read_text().splitlines()][1:])  # a row removed above
    lines = _generate(prompts, out, sampler)
    assert sampler.calls == 7 and [line["index"] for line in lines] == [0, 1]  # reused at their new index
    assert [line["id"] for line in lines] == ["q1", "q2"] and len(out.read_text().splitlines()) == 2


def test_settings_that_change_the_output_are_recorded_and_guarded(tmp_path):
    out, prompts = tmp_path / "s.jsonl", _prompts(tmp_path, ["one"])
    records = load_prompts(prompts).records
    settings = {"family": "llava", "backend": "hf", "dtype": "float32", "image_root": str(tmp_path)}
    generate_samples(records, CountingSampler(), CONFIG, out, settings=settings, source=prompts)
    for key, value in [("dtype", "bfloat16"), ("backend", "vllm"), ("family", "qwen2_vl"), ("image_root", "/x")]:
        with pytest.raises(ValueError, match=f"other settings.*'{key}'"):
            generate_samples(records, CountingSampler(), CONFIG, out, settings={**settings, key: value}, source=prompts)


# ---- lost work -----------------------------------------------------------------------------------------

HOLDER = """
import fcntl, sys, time
f = open(sys.argv[1], "a+")
fcntl.flock(f, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(30)
"""


def test_one_writer_per_output_and_finished_files_never_shrink(tmp_path, capsys):
    out, sampler = tmp_path / "s.jsonl", CountingSampler()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out) + ".lock"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ValueError, match="another process is writing .*s.jsonl"):
            ResumableLines(out, {}, inputs={})
        samples = _samples(tmp_path)  # the command line: refused before any model or judge is loaded
        assert cli(["judge", str(samples), "--judge", "objects", "--out", str(out)]) == 1
        assert "another process is writing" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    prompts = _prompts(tmp_path, ["one", "two", "three"])
    _generate(prompts, out, sampler)
    lines = _generate(prompts, out, sampler, limit=2)  # a smaller --limit: this run's two lines ...
    assert len(lines) == 2 and len(out.read_text().splitlines()) == 3 and sampler.calls == 3  # ... the file keeps 3
    assert not Path(str(out) + ".lock").exists()
    # --out equal to the input: a usage error, the input intact.
    text = out.read_text()
    for command in (["judge", str(out), "--judge", "objects"], ["pairs", str(out)]):
        assert cli([*command, "--out", str(out)]) == 2 and "is the input file" in capsys.readouterr().err
    assert out.read_text() == text


def test_a_cut_round_json_is_reported_and_written_atomically(tmp_path):
    done = tmp_path / "round-1" / "round.json"
    write_json(done, {"round": 1, "pairs": 3})
    assert read_json(done) == {"round": 1, "pairs": 3} and [p.name for p in done.parent.iterdir()] == ["round.json"]
    done.write_text('{"round": 1, "pai')
    with pytest.raises(ValueError, match=r"round.json is damaged .*delete it and rerun"):
        read_json(done)


# ---- late crashes --------------------------------------------------------------------------------------


def test_a_truncated_image_is_a_bad_record_before_sampling(tmp_path):
    prompts = _prompts(tmp_path, ["one", "two"], images=True)
    Image.frombytes("RGB", (64, 64), bytes(range(256)) * 48).save(tmp_path / "b.png")
    data = (tmp_path / "b.png").read_bytes()
    (tmp_path / "b.png").write_bytes(data[: len(data) // 2])  # the header survives, the pixels do not
    rows = [json.loads(t) for t in prompts.read_text().splitlines()]
    _rows(prompts, [rows[0], {**rows[1], "images": ["b.png"]}])
    assert len(load_prompts(prompts).records) == 2  # the header check alone passes it
    with pytest.raises(BadRecordError, match=r"record 1 \(id='q1'\): corrupt_image"):
        load_prompts(prompts, decode=True)
    data = load_prompts(prompts, decode=True, on_bad_record="skip")
    assert [r.id for r in data.records] == ["q0"] and data.skips.counts == {"corrupt_image": 1}


# ---- silent acceptance ---------------------------------------------------------------------------------


def _scored(path: Path, scores: list) -> Path:
    samples = [{"text": f"answer {k}", "score": s} for k, s in enumerate(scores)]
    return _rows(path, [{"index": 0, "id": "a", "prompt": "Q?", "images": [], "meta": {}, "samples": samples}])


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-Infinity", "1e39", "-1e39"])
def test_scores_that_are_not_finite_float32_are_refused(tmp_path, capsys, bad):
    path = tmp_path / "scored.jsonl"
    path.write_text(_scored(path, [1.0, 2.0]).read_text().replace("2.0", bad))
    assert cli(["pairs", str(path), "--out", str(tmp_path / "p.jsonl")]) == 1
    err = capsys.readouterr().err
    assert "scored.jsonl, line 1: sample 1 has score" in err and not (tmp_path / "p.jsonl").exists()
    value = float(bad)
    with pytest.raises(ValueError, match=r"record 0 \(id='s0'\): the judge gave"):
        judge_samples(_samples(tmp_path), lambda items: [{"score": value} for _ in items], tmp_path / "j.jsonl")


def _samples(tmp_path: Path, images: list | None = None, **extra) -> Path:
    line = {
        "index": 0,
        "id": "s0",
        "prompt": "Describe." if not images else "<image>\nDescribe.",
        "images": images or [],
        "meta": {"objects": ["star"]},
        "samples": [{"text": "A star."}],
        **extra,
    }
    return _rows(tmp_path / "samples.jsonl", [line])


def test_nonsense_numbers_and_flags_are_usage_errors(tmp_path, capsys):
    samples = _samples(tmp_path)
    for command, flag in [
        (["generate", str(samples), "--model", "m", "--out", "o.jsonl", "--batch-size", "0"], "--batch-size"),
        (["generate", str(samples), "--model", "m", "--out", "o.jsonl", "--temperature", "-1"], "--temperature"),
        (["generate", str(samples), "--model", "m", "--out", "o.jsonl", "--n", "nan"], "--n"),
        (["judge", str(samples), "--judge", "objects", "--out", "o.jsonl", "--chunk-size", "-1"], "--chunk-size"),
        (["pairs", str(samples), "--out", "o.jsonl", "--min-gap", "-2"], "--min-gap"),
    ]:
        assert cli(command) == 2 and flag in capsys.readouterr().err, command
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        GenerateConfig(n=1, temperature=-0.5)
    scored = _scored(tmp_path / "scored.jsonl", [1.0, 5.0])
    assert cli(["pairs", str(scored), "--require-correct", "--out", str(tmp_path / "p.jsonl")]) == 2
    assert "no sample in" in capsys.readouterr().err and not (tmp_path / "p.jsonl").exists()


def test_an_unfinished_upstream_file_is_refused(tmp_path, capsys):
    samples = _samples(tmp_path)
    Path(str(samples) + ".settings.json").write_text(json.dumps({"model": "m", "finished": False}))
    assert cli(["judge", str(samples), "--judge", "objects", "--out", str(tmp_path / "j.jsonl")]) == 1
    assert "samples.jsonl is unfinished: rerun the generate command" in capsys.readouterr().err


def test_the_model_sees_what_it_can_take(tmp_path):
    model, processor = tiny("causal_lm")
    sampler = HFSampler(model, processor, CONFIG)
    _image(tmp_path / "a.png")
    records = [
        PromptRecord("Hi.", [], "t", 0, str(tmp_path)),
        PromptRecord("<image>\nDescribe.", ["a.png"], "v", 1, str(tmp_path)),
    ]
    with pytest.raises(BadRecordError, match=r"record 1 \(id='v'\): images_for_text_model"):
        check_prompts(PromptData(records, *_skips()), sampler, CONFIG)
    kept = check_prompts(PromptData(records, *_skips()), sampler, CONFIG, "skip")
    assert [r.id for r in kept.records] == ["t"] and kept.skips.counts == {"images_for_text_model": 1}
    limit = model.config.get_text_config().max_position_embeddings
    long = GenerateConfig(n=1, temperature=0.0, max_new_tokens=limit)
    with pytest.raises(BadRecordError, match=rf"record 0 \(id='t'\): prompt_too_long: .* exceed the model's {limit}"):
        check_prompts(PromptData(records[:1], *_skips()), sampler, long)


def _skips():
    from mm_unidpo.data import SkipReport

    return SkipReport(), "test"


# ---- trust ---------------------------------------------------------------------------------------------


def test_sample_lines_cannot_point_outside_the_image_root(tmp_path, capsys):
    (tmp_path / "root").mkdir()
    _image(tmp_path / "outside.png")
    _image(tmp_path / "root" / "in.png")
    for images, extra in [
        (["../outside.png"], {}),
        ([str(tmp_path / "outside.png")], {}),
        (["outside.png"], {"image_root": str(tmp_path)}),
    ]:  # a line's own root is ignored
        samples = _samples(tmp_path, images, **extra)
        assert (
            cli(
                [
                    "judge",
                    str(samples),
                    "--judge",
                    "objects",
                    "--image-root",
                    str(tmp_path / "root"),
                    "--out",
                    str(tmp_path / "j.jsonl"),
                ]
            )
            == 1
        )
        err = capsys.readouterr().err
        assert "samples.jsonl, line 1" in err and ("image_outside_root" in err or "missing_image" in err), err
    samples = _samples(tmp_path, ["in.png"])
    ((line, record),) = read_samples(samples, tmp_path / "root")
    assert record.image_root == str((tmp_path / "root").resolve())


# ---- unclear messages ----------------------------------------------------------------------------------


def test_messages_name_the_file_the_record_and_the_path(tmp_path, capsys):
    samples = _samples(tmp_path)
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(samples.read_bytes().replace(b"A star.", "Ä star.".encode("latin-1")))
    assert cli(["judge", str(bad), "--judge", "objects", "--out", str(tmp_path / "j.jsonl")]) == 1
    assert "latin1.jsonl, line 1: byte" in capsys.readouterr().err

    def failing(items):
        raise ZeroDivisionError("division by zero")

    with pytest.raises(RuntimeError, match=r"the judge failed on record 0 \(id='s0'\): ZeroDivisionError"):
        judge_samples(samples, failing, tmp_path / "f.jsonl")
    for kind in ("reward_model", "prm"):
        assert (
            cli(
                [
                    "judge",
                    str(samples),
                    "--judge",
                    kind,
                    "--model",
                    str(tmp_path / "no-such-model"),
                    "--out",
                    str(tmp_path / f"{kind}.jsonl"),
                ]
            )
            == 1
        )
        assert "is a local path that does not exist" in capsys.readouterr().err
    long = tmp_path / ("x" * 200) / ("y" * 50 + ".jsonl")
    assert cli(["judge", str(long), "--judge", "objects", "--out", str(tmp_path / "j.jsonl")]) == 1
    assert len(capsys.readouterr().err) < 2500


def test_progress_is_logged_when_not_on_a_terminal(tmp_path, caplog):
    prompts = _prompts(tmp_path, [f"prompt {k}" for k in range(20)])
    records = load_prompts(prompts).records
    with caplog.at_level("INFO", logger="mm_unidpo.onpolicy.store"):
        generate_samples(records, CountingSampler(), CONFIG, tmp_path / "s.jsonl", progress=False, desc="gen")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("gen: ")]
    assert lines == [f"gen: {k}/20 prompts" for k in range(2, 21, 2)]


def test_iterate_reuses_rounds_only_under_their_config(tmp_path):
    from mm_unidpo.onpolicy.iterate import IterateConfig, JudgeSection, check_settings, load_iterate_config

    config = IterateConfig(model="m", prompts=["p.jsonl"], output_dir=str(tmp_path / "run"))
    check_settings(config)
    (tmp_path / "run" / "round-1").mkdir()
    check_settings(IterateConfig(model="m", prompts=["p.jsonl"], output_dir=str(tmp_path / "run"), rounds=5))
    for changed in (
        IterateConfig(
            model="m", prompts=["p.jsonl"], output_dir=str(tmp_path / "run"), judge=JudgeSection("vlm", {"model": "j"})
        ),
        IterateConfig(model="m", prompts=["p.jsonl"], output_dir=str(tmp_path / "run"), generate=GenerateConfig(n=4)),
    ):
        with pytest.raises(ValueError, match=r"holds rounds made with other settings \{'(judge|generate)'"):
            check_settings(changed)
    (tmp_path / "run" / "iterate_settings.json").unlink()
    with pytest.raises(ValueError, match="holds rounds but no iterate_settings.json"):
        check_settings(config)
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("model: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.yaml: byte \d+ is not UTF-8"):
        load_iterate_config(bad)
