"""Format converters: each public schema by name and auto-detected, plus the registry's errors."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from mm_unidpo.data import (FORMATS, BadRecordError, PreferenceRecord, UnknownFormatError, detect_format,
                            load_preference_data, register_format)
from mm_unidpo.data import formats
from mm_unidpo.data.formats import get_converter


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), (200, 10, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


UNIDPO = {"id": "u1", "instruction": "What is shown?", "chosen": "A red square.", "rejected": "A cat.",
          "score_chosen": 0.9, "score_rejected": 0.2, "images": [{"bytes_b64": None, "bytes": png(), "path": None}]}
RLAIF_V = {"ds_name": "RLAIF-V", "idx": 17, "question": "What color is it?", "chosen": "Red.", "rejected": "Blue.",
           "image": {"bytes": png(), "path": "x.jpg"}, "origin_dataset": "coco"}
TRL = {"prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Color?"}]}],
       "chosen": [{"role": "assistant", "content": "Red."}],
       "rejected": [{"role": "assistant", "content": [{"type": "text", "text": "Blue."}]}],
       "images": [png()]}
VLFEEDBACK = {"id": "vf-3", "instruction": "Describe the image.", "models": ["a", "b", "c"], "image": png(),
              "completions": [
                  {"model": "a", "response": "Middling.", "annotations": {
                      "Helpfulness": {"Rating": "3", "Rationale": "ok"},
                      "Visual Faithfulness": {"Rating": "4", "Rationale": "ok"}}},
                  {"model": "b", "response": "Great.", "annotations": {
                      "Helpfulness": {"Rating": "5", "Rationale": ".."},
                      "Visual Faithfulness": {"Rating": "N/A", "Rationale": "unrated aspects are ignored"}}},
                  {"model": "c", "response": "Poor.", "annotations": {
                      "Helpfulness": {"Rating": "1", "Rationale": ".."},
                      "Visual Faithfulness": {"Rating": "2", "Rationale": ".."}}}]}
POVID = {"id": "p-1", "image": "COCO_1.jpg",
         "conversations": [{"from": "human", "value": "<image>\nWhat is on the table?"},
                           {"from": "gpt", "value": "A cup."}],
         "rejected_conversations": [{"from": "human", "value": "<image>\nWhat is on the table?"},
                                    {"from": "gpt", "value": "A cup and a dragon."}]}
SWIFT = {"id": "s-1", "images": ["COCO_1.jpg"], "rejected_images": ["COCO_1.jpg"],
         "messages": [{"role": "user", "content": "<image>What is on the table?"},
                      {"role": "assistant", "content": "A cup."}],
         "rejected_response": "A cup and a dragon."}
ROWS = {"unidpo": UNIDPO, "rlaif_v": RLAIF_V, "trl": TRL, "vlfeedback": VLFEEDBACK, "povid": POVID, "swift": SWIFT}


def test_registry_holds_all_formats():
    assert set(FORMATS) == set(ROWS)


@pytest.mark.parametrize("name", sorted(ROWS))
def test_detected_from_first_record_keys(name):
    assert detect_format(ROWS[name]) == name


@pytest.mark.parametrize("how", ["auto", "named"])
@pytest.mark.parametrize("name", sorted(ROWS))
def test_converted_through_the_loader(name, how, tmp_path):
    (tmp_path / "COCO_1.jpg").write_bytes(png())
    data = load_preference_data([ROWS[name]], format=name if how == "named" else None, image_root=tmp_path)
    assert data.format == name and len(data) == 1
    record = data[0]
    assert record.index == 0 and record.image_root == str(tmp_path.resolve())
    assert len(record.images) == 1
    expected = {
        "unidpo": ("<image>\nWhat is shown?", "A red square.", "A cat.", (0.9, 0.2), "u1"),
        "rlaif_v": ("<image>\nWhat color is it?", "Red.", "Blue.", (None, None), "17"),
        "trl": (TRL["prompt"], "Red.", "Blue.", (None, None), None),
        "vlfeedback": ("<image>\nDescribe the image.", "Great.", "Poor.", (5.0, 1.5), "vf-3"),
        "povid": ("<image>\nWhat is on the table?", "A cup.", "A cup and a dragon.", (None, None), "p-1"),
        "swift": ("<image>What is on the table?", "A cup.", "A cup and a dragon.", (None, None), "s-1"),
    }[name]
    assert (record.prompt, record.chosen, record.rejected, (record.score_chosen, record.score_rejected),
            record.id) == expected


def test_rlaif_v_with_pil_image_as_datasets_decodes_it():
    row = dict(RLAIF_V, image=Image.open(io.BytesIO(png())))
    record = load_preference_data([row])[0]
    assert isinstance(record.images[0], Image.Image)


def test_unidpo_accepts_prompt_key_single_image_path_and_no_scores(tmp_path):
    (tmp_path / "a.png").write_bytes(png())
    row = {"prompt": "<image> Which?", "chosen": "This.", "rejected": "That.", "image": "a.png"}
    record = load_preference_data([row], image_root=tmp_path)[0]
    assert (record.prompt, record.images, record.score_chosen, record.id) == ("<image> Which?", ["a.png"], None, None)


def test_vlfeedback_numeric_ratings_and_ties():
    row = dict(VLFEEDBACK, completions=[
        {"response": "x", "annotations": {"Helpfulness": 4, "Faithfulness": 2}},
        {"response": "y", "annotations": {"Helpfulness": 5, "Faithfulness": 5}}])
    record = load_preference_data([row], format="vlfeedback")[0]
    assert (record.chosen, record.rejected, record.score_chosen, record.score_rejected) == ("y", "x", 5.0, 3.0)

    tie = dict(VLFEEDBACK, completions=[{"response": "x", "annotations": {"H": {"Rating": "4"}}},
                                         {"response": "y", "annotations": {"H": 4}}])
    with pytest.raises(BadRecordError, match=r"record 0 \(id='vf-3'\): no_preference: all 2 rated completions tie"):
        load_preference_data([tie])
    lonely = dict(VLFEEDBACK, completions=[{"response": "x", "annotations": {"H": {"Rating": "N/A"}}},
                                            {"response": "y", "annotations": {"H": 3}}])
    with pytest.raises(BadRecordError, match="no_preference: 1 of 2 completions are rated"):
        load_preference_data([lonely])
    data = load_preference_data([tie, lonely, row], on_bad_record="skip")
    assert len(data) == 1 and data.skips.counts == {"no_preference": 2}


def test_povid_multi_turn_prompt_becomes_chat():
    row = dict(POVID, conversations=[
        {"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A cup."},
        {"from": "human", "value": "Color?"}, {"from": "gpt", "value": "White."}],
        rejected_conversations=[{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A cup."},
                                {"from": "human", "value": "Color?"}, {"from": "gpt", "value": "Purple."}],
        image=png())
    record = load_preference_data([row])[0]
    assert record.prompt == [{"role": "user", "content": "<image>\nWhat is it?"},
                             {"role": "assistant", "content": "A cup."}, {"role": "user", "content": "Color?"}]
    assert (record.chosen, record.rejected) == ("White.", "Purple.")


@pytest.mark.parametrize("name, change, words", [
    ("povid", {"rejected_conversations": [{"from": "human", "value": "hi"}]}, "does not end with a gpt turn"),
    ("povid", {"conversations": [{"from": "gpt", "value": "x"}]}, "no human turn"),
    ("povid", {"conversations": [{"from": "robot", "value": "x"}]}, "unknown speaker"),
    ("vlfeedback", {"completions": "nope"}, "completions must be a list"),
    ("trl", {"chosen": [{"role": "user", "content": "x"}]}, "chosen has no assistant message"),
    ("unidpo", {"instruction": None, "prompt": None}, "bad_prompt"),
])
def test_malformed_rows_are_bad_records(name, change, words):
    row = dict(ROWS[name], **change)
    with pytest.raises(BadRecordError, match=words) as info:
        load_preference_data([row], format=name, max_image_pixels=None, image_root=".")
    assert "record 0" in str(info.value)


def test_missing_fields_named():
    with pytest.raises(BadRecordError, match=r"record 0 \(id='u1'\): missing_field: missing field\(s\) rejected"):
        load_preference_data([{k: v for k, v in UNIDPO.items() if k != "rejected"}], format="unidpo")
    with pytest.raises(BadRecordError, match="missing_field: needs one of the fields instruction, prompt"):
        load_preference_data([{"chosen": "a", "rejected": "b"}], format="unidpo")


def test_unknown_and_undetectable_formats_list_the_known_ones():
    with pytest.raises(UnknownFormatError, match="unknown preference data format 'sharegpt'.*povid.*unidpo"):
        get_converter("sharegpt")
    with pytest.raises(UnknownFormatError, match="unknown preference data format"):
        load_preference_data([UNIDPO], format="sharegpt")
    with pytest.raises(UnknownFormatError) as info:
        load_preference_data([{"text": "x", "label": 1}])
    message = str(info.value)
    assert "['label', 'text']" in message and "format=<name>" in message
    assert all(name in message for name in ROWS)


def test_adding_a_format_is_one_function_and_one_line(monkeypatch):
    for table in ("FORMATS", "_DETECT", "_SIGNATURES"):  # keep the real registry clean for other tests
        monkeypatch.setattr(formats, table, dict(getattr(formats, table)))

    @register_format("goodbad", signature="q, good, bad", detect=lambda row: {"q", "good", "bad"} <= row.keys())
    def convert(row, index):
        return PreferenceRecord(prompt=row["q"], chosen=row["good"], rejected=row["bad"], index=index)

    data = load_preference_data([{"q": "2+2?", "good": "4", "bad": "5"}])
    assert data.format == "goodbad" and data[0].chosen == "4"
