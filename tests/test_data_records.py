"""Record validation and normalization: every text/score reason, placeholders, image reference forms."""

from __future__ import annotations

import base64
import math

import pytest
from PIL import Image

from mm_unidpo.data import (BAD_RECORD_REASONS, IMAGE_PLACEHOLDER, BadRecordError, PreferenceRecord, SkipReport,
                            add_image_placeholders, as_image_ref, count_placeholders, message_text,
                            validate_record)


def rec(**kw) -> PreferenceRecord:
    base = dict(prompt="Describe <image>.", chosen="A cat.", rejected="A dog.", images=["a.png"], id="r7", index=3)
    base.update(kw)
    return PreferenceRecord(**base)


def reason_of(record: PreferenceRecord) -> BadRecordError:
    with pytest.raises(BadRecordError) as info:
        validate_record(record)
    error = info.value
    assert "record 3 (id='r7')" in str(error), str(error)
    assert error.index == 3 and error.record_id == "r7"
    assert error.reason in BAD_RECORD_REASONS
    return error


def test_valid_record_passes_unchanged():
    record = validate_record(rec(score_chosen=4, score_rejected="2.5"))
    assert record.prompt == "Describe <image>."
    assert (record.score_chosen, record.score_rejected) == (4.0, 2.5)
    assert record.images == ["a.png"]


@pytest.mark.parametrize("kw, reason, words", [
    (dict(prompt="<image> vs <image>"), "placeholder_mismatch", "2 image placeholder(s) but the record has 1"),
    (dict(images=[]), "placeholder_mismatch", "1 image placeholder(s) but the record has 0"),
    (dict(chosen=""), "empty_response", "chosen is empty"),
    (dict(rejected="  \n\t"), "empty_response", "rejected is empty"),
    (dict(chosen=None), "non_string_response", "chosen is not a string"),
    (dict(rejected=["A dog."]), "non_string_response", "rejected is not a string"),
    (dict(rejected="  A cat. "), "identical_responses", "same text"),
    (dict(score_chosen=float("nan"), score_rejected=1.0), "bad_score", "score_chosen is nan"),
    (dict(score_chosen=1.0, score_rejected=math.inf), "bad_score", "score_rejected is inf"),
    (dict(score_chosen="high", score_rejected=1.0), "bad_score", "not a number"),
    (dict(score_chosen=True, score_rejected=1.0), "bad_score", "not a number"),
    (dict(score_chosen=[1], score_rejected=1.0), "bad_score", "not a number"),
    (dict(score_chosen=1.0), "bad_score", "only one of"),
    (dict(score_rejected=1.0), "bad_score", "only one of"),
    (dict(images=[{"bytes": None, "path": None}]), "missing_image", "neither bytes nor path"),
    (dict(images=[""]), "missing_image", "empty image path"),
    (dict(images=[42]), "missing_image", "unsupported image value"),
    (dict(images=[{"bytes_b64": "not base64!"}]), "corrupt_image", "invalid base64"),
    (dict(prompt=42), "bad_prompt", "got int"),
    (dict(prompt=[]), "bad_prompt", "non-empty list"),
    (dict(prompt=[{"content": "hi"}]), "bad_prompt", "'role'"),
    (dict(prompt=[{"role": "user", "content": [{"type": "video"}]}]), "bad_prompt", "unsupported content part"),
])
def test_bad_records_name_record_and_problem(kw, reason, words):
    error = reason_of(rec(**kw))
    assert error.reason == reason
    assert words in str(error)


def test_prompt_too_long_error_is_constructible_for_adapters():
    error = BadRecordError(rec(), "prompt_too_long", "prompt uses 2048 of 2048 tokens")
    assert error.reason == "prompt_too_long" and "record 3 (id='r7'): prompt_too_long" in str(error)
    report = SkipReport()
    report.add(error)
    assert report.counts == {"prompt_too_long": 1}


def test_text_prompt_without_placeholder_gets_one_per_image_prepended():
    record = validate_record(rec(prompt="Compare them.", images=["a.png", "b.png"]))
    assert record.prompt == "<image>\n<image>\nCompare them."
    assert count_placeholders(record.prompt) == 2
    # no images, no placeholders: text-only record stays as is
    assert validate_record(rec(prompt="Hi", images=[])).prompt == "Hi"


def test_chat_prompt_placeholders_counted_and_inserted_without_mutating_input():
    source = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is it?"}]
    record = validate_record(rec(prompt=source, images=["a.png"]))
    assert source[1]["content"] == "What is it?"  # the source row is untouched
    assert record.prompt[1]["content"] == [{"type": "image"}, {"type": "text", "text": "What is it?"}]
    assert record.prompt[0] == {"role": "system", "content": "Be brief."}

    parts = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "and <image>?"}]}]
    assert count_placeholders(parts) == 2
    assert validate_record(rec(prompt=parts, images=["a.png", "b.png"])).prompt == parts
    assert reason_of(rec(prompt=parts, images=["a.png"])).reason == "placeholder_mismatch"


def test_add_image_placeholders_zero_is_identity():
    assert add_image_placeholders("x", 0) == "x"
    assert IMAGE_PLACEHOLDER == "<image>"


def test_image_reference_forms():
    image = Image.new("RGB", (2, 2))
    assert as_image_ref(image) is image
    assert as_image_ref(bytearray(b"abc")) == b"abc"
    assert as_image_ref({"bytes": b"abc", "path": "ignored.png"}) == b"abc"
    assert as_image_ref({"bytes": None, "path": "x/y.png"}) == "x/y.png"
    assert as_image_ref({"bytes_b64": base64.b64encode(b"\x89PNG").decode()}) == b"\x89PNG"
    record = validate_record(rec(images=({"path": "a.png", "bytes": None},)))
    assert record.images == ["a.png"]


def test_message_text():
    messages = [{"role": "user", "content": "q"},
                {"role": "assistant", "content": [{"type": "text", "text": "an"}, {"type": "text", "text": "swer"}]}]
    assert message_text(messages) == "answer"
    assert message_text(messages, None) == "q\nanswer"
    assert message_text(messages[:1]) is None


def test_skip_report_summary():
    report = SkipReport()
    assert report.summary() == "no records skipped"
    for index, reason in enumerate(("bad_score", "bad_score", "empty_response")):
        assert report.add(BadRecordError(None, reason, "x", index=index))
    assert report.total == 3
    assert report.summary() == "skipped 3 bad records (bad_score: 2, empty_response: 1)"
    # the same record met again (another epoch, the reference pass) is not counted again
    assert not report.add(BadRecordError(None, "bad_score", "x", index=0))
    assert report.total == 3
    merged = report.merged(SkipReport())
    assert merged.counts == report.counts and merged is not report
