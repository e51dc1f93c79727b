"""Bad input through the loader, the adapters and the pre-flight pass: each kind is a clear error naming the
record (index and id) or the file and the position, or with on_bad_record="skip" a skip counted once.
(`mm-unidpo train`, the caches and the CLI: test_train_faults.py.)"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from mm_unidpo.data import (BadRecordError, DataFileError, DuplicateIdError, PreferenceRecord, load_preference_data,
                            record_digests)
from mm_unidpo.data.formats import FORMATS


pytestmark = pytest.mark.usefixtures("single_thread", "hf_cache")


def _jpeg(size: int = 96, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "ok.jpg").write_bytes(_jpeg())
    whole = _jpeg()
    (tmp_path / "truncated.jpg").write_bytes(whole[:len(whole) // 2])  # the header reads fine; decoding fails
    return tmp_path


def _lines(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


GOOD = {"id": "g", "prompt": "<image>\nWhat is it?", "chosen": "A cat.", "rejected": "A dog.", "images": ["ok.jpg"]}
RLAIF = {"idx": 7, "question": "What is it?", "chosen": "A cat.", "rejected": "A dog.", "image": "ok.jpg"}
POVID = {"id": "p", "image": "ok.jpg",
         "conversations": [{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A cat."}],
         "rejected_conversations": [{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A dog."}]}
VLF = {"id": "v", "instruction": "What is it?", "image": "ok.jpg",
       "completions": [{"response": "A cat.", "annotations": {"Helpfulness": {"Rating": "5"}}},
                       {"response": "A dog.", "annotations": {"Helpfulness": {"Rating": "2"}}}]}
DEEP = "[" * 200_000 + "]" * 200_000


def _without(row: dict, key: str) -> dict:
    return {k: v for k, v in row.items() if k != key}


# (kind, rows after one good row of the same format, reason, text the message must hold). The bad row is
# record 1 of its file.
RECORD_KINDS = [
    ("rlaif_v missing field", [RLAIF, _without(RLAIF, "rejected")], "missing_field", "missing field(s) rejected"),
    ("rlaif_v null image", [RLAIF, {**RLAIF, "image": None}], "missing_image", "needs its image"),
    ("rlaif_v no image field", [RLAIF, _without(RLAIF, "image")], "missing_image", "needs its image"),
    ("vlfeedback missing completions", [VLF, _without(VLF, "completions")], "missing_field", "completions"),
    ("povid missing rejected conversation", [POVID, _without(POVID, "rejected_conversations")], "missing_field",
     "rejected_conversations"),
    ("povid rejected asks another question",
     [POVID, {**POVID, "rejected_conversations": [{"from": "human", "value": "<image>\nHow many?"},
                                                 {"from": "gpt", "value": "Two."}]}],
     "mismatched_prompts", "asks a different question"),
    ("povid speaker of the wrong type",
     [POVID, {**POVID, "conversations": [{"from": ["human"], "value": "Q"}, {"from": "gpt", "value": "A"}]}],
     "missing_field", "unknown speaker"),
    ("mixed formats (rlaif_v row in a povid file)", [POVID, {**RLAIF, "id": "p"}], "missing_field",
     "was detected from record 0"),
    ("line nested 200k deep", [GOOD, DEEP], "invalid_json", "nested too deeply"),
    ("response of NUL characters", [GOOD, {**GOOD, "chosen": "\x00\x00\x00"}], "empty_response",
     "only control or invisible characters"),
    ("response of zero-width characters", [GOOD, {**GOOD, "rejected": "\u200b\u200d \u2060"}], "empty_response",
     "rejected is empty"),
    ("score beyond float32", [GOOD, {**GOOD, "score_chosen": 1e39, "score_rejected": 0.0}], "bad_score",
     "beyond float32"),
]


@pytest.mark.parametrize("kind,rows,reason,text", RECORD_KINDS, ids=[k[0] for k in RECORD_KINDS])
def test_bad_record_kinds_name_the_record_or_are_skipped_once(folder, kind, rows, reason, text):
    path = _lines(folder / "data.jsonl", rows)
    with pytest.raises(BadRecordError) as info:
        load_preference_data(path)
    error = info.value
    record_id = rows[1].get("id", rows[1].get("idx")) if isinstance(rows[1], dict) else None
    where = f"record 1 (id={None if record_id is None else str(record_id)!r}): {reason}: "
    assert error.reason == reason and str(error).startswith(where) and text in str(error), str(error)
    data = load_preference_data(path, on_bad_record="skip")
    assert len(data) == 1 and dict(data.skips.counts) == {reason: 1}


def test_a_converter_crash_is_the_records_error(folder, monkeypatch):
    """Whatever a converter trips over (a bare KeyError deep inside) becomes malformed_record for that row."""
    def fragile(row, index):
        return FORMATS["unidpo"](row, index) if index == 0 else row["no such field"]

    monkeypatch.setitem(FORMATS, "fragile", fragile)
    path = _lines(folder / "d.jsonl", [GOOD, {**GOOD, "id": "x"}])
    with pytest.raises(BadRecordError, match=r"record 1 \(id='x'\): malformed_record: .*KeyError: 'no such field'"):
        load_preference_data(path, format="fragile")
    assert dict(load_preference_data(path, format="fragile", on_bad_record="skip").skips.counts) == {"malformed_record": 1}


# ---- file-level errors: the file and the position -----------------------------------------------------------

def _bad_files(folder: Path) -> dict[str, tuple[Path, str]]:
    text = json.dumps([GOOD, GOOD])
    files = {
        "empty JSON": (folder / "empty.json", b"", "is empty"),
        "truncated JSON": (folder / "cut.json", text[:-30].encode(), "line 1, column"),
        "JSON nested 200k deep": (folder / "deep.json", DEEP.encode(), "nested too deeply"),
        "non-UTF-8 JSON lines": (folder / "latin.jsonl", json.dumps(GOOD).encode() + b"\n" +
                                 json.dumps({**GOOD, "chosen": "caf\u00e9"}, ensure_ascii=False).encode("latin-1"),
                                 "line 2, byte"),
        "UTF-16 JSON": (folder / "utf16.json", text.encode("utf-16"), "UTF-16"),
    }
    out = {}
    for kind, (path, data, needle) in files.items():
        path.write_bytes(data)
        out[kind] = (path, needle)
    datasets.Dataset.from_list([RLAIF] * 40).to_parquet(str(folder / "whole.parquet"))
    whole = (folder / "whole.parquet").read_bytes()
    (folder / "cut.parquet").write_bytes(whole[:len(whole) // 2])
    out["truncated Parquet"] = (folder / "cut.parquet", "not a readable Parquet file")
    return out


@pytest.mark.parametrize("kind", ["empty JSON", "truncated JSON", "JSON nested 200k deep", "non-UTF-8 JSON lines",
                                  "UTF-16 JSON", "truncated Parquet"])
def test_file_level_errors_name_the_file_and_position(folder, kind):
    path, needle = _bad_files(folder)[kind]
    for policy in ("error", "skip"):  # a file that cannot be read is never a skip
        with pytest.raises(DataFileError) as info:
            load_preference_data(path, on_bad_record=policy)
        assert str(info.value).startswith(str(path)) and needle in str(info.value), str(info.value)
    if kind == "non-UTF-8 JSON lines":
        assert "must be UTF-8" in str(info.value) and "iconv" in str(info.value)
    if kind == "truncated JSON":
        assert "looks truncated" in str(info.value)


def test_utf8_byte_order_mark_is_accepted(folder):
    path = folder / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD).encode() + b"\n")
    assert [r.id for r in load_preference_data(path)] == ["g"]


def test_empty_and_all_bad_sources_say_so(folder, caplog):
    (folder / "none.jsonl").write_text("\n\n")
    with caplog.at_level(logging.WARNING):
        data = load_preference_data(folder / "none.jsonl")
    assert len(data) == 0 and "the source has no records" in caplog.text
    assert data.describe_empty().endswith("no preference records (the source is empty)")
    data = load_preference_data(_lines(folder / "bad.jsonl", [{**GOOD, "chosen": ""}] * 3), on_bad_record="skip")
    assert "all 3 records were bad (skipped 3 bad records (empty_response: 3))" in data.describe_empty()


def test_duplicate_ids_warn_with_count_or_fail_when_unique(folder, caplog):
    rows = [{**GOOD, "id": i, "chosen": f"A cat {n}."} for n, i in enumerate("abacbaddd")]
    path = _lines(folder / "dup.jsonl", rows)
    with caplog.at_level(logging.WARNING, logger="mm_unidpo.data.loading"):
        assert len(load_preference_data(path)) == 9
    assert "3 id(s) are held by more than one record (8 records)" in caplog.text
    assert "'a' at records 0, 2, 5" in caplog.text
    with pytest.raises(DuplicateIdError, match=r"dup.jsonl: 3 id\(s\) .*'a' at records 0, 2, 5.*unique_ids"):
        load_preference_data(path, unique_ids=True)


# ---- adapters and the pre-flight pass ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def models():
    from mm_unidpo.testing import tiny

    return {family: tiny(family) for family in ("llava", "qwen2_vl", "causal_lm")}


def _adapter(models, family, **options):
    from mm_unidpo.models import get_adapter

    model, processor = models[family]
    return get_adapter(model, processor, **options)


def _record(folder, prompt="<image>\nWhat is it?", chosen="A cat.", rejected="A dog.", image="ok.jpg", **kw):
    images = [str(folder / image)] if image else []
    return PreferenceRecord(prompt, chosen, rejected, images=images, image_root=str(folder), **kw)


ENCODE_KINDS = [
    # (kind, family, record fields, reason, text)
    ("truncated JPEG", "llava", {"image": "truncated.jpg"}, "corrupt_image", "cannot be decoded"),
    ("prompt too long for max_length", "llava", {"prompt": "<image>\n" + "describe every detail " * 40},
     "prompt_too_long", "no response token fits"),
    ("image token in a response", "llava", {"rejected": "It shows <image> here."}, "placeholder_mismatch",
     "the rejected response contains the model's image/video token '<image>'"),
    ("image token in a Qwen response", "qwen2_vl", {"chosen": "See <|image_pad|>."}, "placeholder_mismatch",
     "the chosen response contains the model's image/video token"),
    ("more image tokens than images (Qwen)", "qwen2_vl", {"prompt": "<image>\nWhat <|image_pad|> is?"},
     "placeholder_mismatch", "the processor refuses the prompt"),
    ("video token without a video (Qwen)", "qwen2_vl", {"prompt": "<image>\nWhat is <|video_pad|>?"},
     "placeholder_mismatch", "no videos were passed"),
    ("images for a text-only model", "causal_lm", {}, "images_for_text_model", "text-only model"),
]


@pytest.mark.parametrize("kind,family,fields,reason,text", ENCODE_KINDS, ids=[k[0] for k in ENCODE_KINDS])
def test_preflight_finds_what_collate_would_fail_on(models, folder, kind, family, fields, reason, text):
    from mm_unidpo.train.preflight import PreflightError, preflight

    adapter = _adapter(models, family, max_length=96)
    prompt = "What is it?" if family == "causal_lm" else "<image>\nWhat is it?"
    good = [_record(folder, prompt=prompt, image=None if family == "causal_lm" else "ok.jpg", id=f"ok{i}", index=i)
            for i in range(3)]
    bad = _record(folder, **{"prompt": prompt, **fields}, id="bad", index=3)
    with pytest.raises(BadRecordError) as direct:  # what collate itself says
        adapter.collate([bad])
    assert direct.value.reason == reason
    with pytest.raises(PreflightError) as info:
        preflight([*good, bad], adapter, description="data.train x.jsonl")
    message = str(info.value)
    assert message.startswith("data.train x.jsonl: 1 of 4 records cannot be trained on")
    assert f"record 3 (id='bad'): {reason}: " in message and text in message, message
    assert info.value.reason == reason and info.value.index == 3 and info.value.record_id == "bad"
    result = preflight([bad, *good], adapter, on_bad_record="skip")
    assert [r.id for r in result.records] == ["ok0", "ok1", "ok2"] and result.kept == [1, 2, 3]
    assert dict(result.skips.counts) == {reason: 1}


def test_truncated_image_stays_bad_when_a_library_relaxed_pil(models, folder, monkeypatch):
    """lmms-eval sets PIL's ImageFile.LOAD_TRUNCATED_IMAGES = True on import, which grey-pads truncated files."""
    from PIL import ImageFile

    from mm_unidpo.train.preflight import preflight

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    result = preflight([_record(folder, image="truncated.jpg", id="cut", index=0), _record(folder, id="ok", index=1)],
                       _adapter(models, "llava"), on_bad_record="skip")
    assert dict(result.skips.counts) == {"corrupt_image": 1} and ImageFile.LOAD_TRUNCATED_IMAGES is True


def test_processor_crash_is_the_records_error(models, folder, monkeypatch):
    from mm_unidpo.train.preflight import PreflightError, preflight

    adapter = _adapter(models, "llava")

    def broken(text, images, record):
        raise RuntimeError("shape mismatch deep inside")

    monkeypatch.setattr(adapter.hooks, "tokenize_prompt", broken)
    with pytest.raises(PreflightError, match=r"record 0 \(id='r'\): encode_failed: .*RuntimeError: shape mismatch"):
        preflight([_record(folder, id="r", index=0)], adapter)


@pytest.mark.parametrize("family,text,token", [("llava", "Use </s> to strike.", "</s>"),
                                                ("qwen2_vl", "Ends with <|im_end|> here.", "<|im_end|>"),
                                                ("causal_lm", "Ends with <|eot_id|> here.", "<|eot_id|>")])
def test_special_token_text_in_a_response_is_plain_text(models, folder, family, text, token):
    """Decision: a response's special-token text is encoded as the characters it is, never as that token:
    only the template's own end of turn ends the response (so nothing is cut mid-response or dropped)."""
    adapter = _adapter(models, family)
    tokenizer = adapter.tokenizer
    image = None if family == "causal_lm" else "ok.jpg"
    prompt = "What is it?" if family == "causal_lm" else "<image>\nWhat is it?"
    encoded = adapter.encode(_record(folder, prompt=prompt, chosen=text, image=image, id="s", index=0))
    special = tokenizer.convert_tokens_to_ids(token)
    ends = adapter.end_token_ids
    assert encoded.chosen_ids[-1] in ends and not ends.intersection(encoded.chosen_ids[:-1])
    assert special not in encoded.chosen_ids[:-1]
    assert tokenizer.decode(encoded.chosen_ids[:-1]).strip() == text  # every character is kept
    plain = adapter.encode(_record(folder, prompt=prompt, chosen="A cat.", image=image, id="p", index=1))
    assert plain.chosen_ids == tokenizer(adapter.render_pair(plain.record)[1], add_special_tokens=False)["input_ids"]


def test_preflight_cache_is_by_content_checked_and_instant_on_rerun(models, folder, caplog):
    from mm_unidpo.train.preflight import preflight

    adapter = _adapter(models, "llava", max_length=96)
    records = [_record(folder, chosen=f"A cat {i}.", id=f"r{i}", index=i) for i in range(6)]
    records.append(_record(folder, image="truncated.jpg", id="cut", index=6))
    cache = folder / "cache"
    first = preflight(records, adapter, on_bad_record="skip", digests=record_digests(records), cache_dir=cache)
    assert (first.encoded, first.cached, first.skips.total) == (7, 0, 1)
    shuffled = records[::-1]  # another order, the same contents: every verdict is found
    again = preflight(shuffled, adapter, on_bad_record="skip", digests=record_digests(shuffled), cache_dir=cache)
    assert (again.encoded, again.cached) == (0, 7) and [r.id for r in again.records] == [f"r{i}" for i in range(5, -1, -1)]
    assert dict(again.skips.counts) == {"corrupt_image": 1} and "record 6 (id='cut')" in again.skips.examples["corrupt_image"]
    # a damaged cache file is named, ignored and rewritten
    (path,) = cache.glob("preflight-*.json")
    payload = json.loads(path.read_text())
    payload["verdicts"][next(iter(payload["verdicts"]))] = ["corrupt_image", "edited by hand", False]
    path.write_text(json.dumps(payload))
    with caplog.at_level(logging.WARNING, logger="mm_unidpo.train.preflight"):
        third = preflight(records, adapter, on_bad_record="skip", digests=record_digests(records), cache_dir=cache)
    assert f"pre-flight cache {path} is damaged (checksum mismatch)" in caplog.text
    assert third.encoded == 7 and third.skips.total == 1
    # another max_length is another cache file
    other = _adapter(models, "llava", max_length=80)
    assert preflight(records, other, on_bad_record="skip", digests=record_digests(records), cache_dir=cache).encoded == 7


def test_preflight_in_worker_processes_gives_the_same_verdicts(models, folder):
    from mm_unidpo.train.preflight import preflight

    adapter = _adapter(models, "llava", max_length=96)
    records = [_record(folder, chosen=f"A cat {i}.", id=f"r{i}", index=i) for i in range(8)]
    records[5] = _record(folder, image="truncated.jpg", id="cut", index=5)
    inline = preflight(records, adapter, on_bad_record="skip", workers=0)
    forked = preflight(records, adapter, on_bad_record="skip", workers=2)
    assert forked.kept == inline.kept == [0, 1, 2, 3, 4, 6, 7]
    assert forked.skips.counts == inline.skips.counts == {"corrupt_image": 1}
