"""Loaders (JSON, JSON lines, Parquet, saved datasets, hub dispatch), bad-record policy, save/load round trip."""

from __future__ import annotations

import io
import json
import logging
import shutil
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from mm_unidpo.data import (BadRecordError, PreferenceRecord, load_image, load_preference_data,
                            save_preference_data)

PHOTOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "images"

pytestmark = pytest.mark.usefixtures("hf_cache")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A data folder with real photos (copied at test time) under images/."""
    if not PHOTOS.is_dir():
        pytest.skip(f"real test photos not found in {PHOTOS}")
    folder = tmp_path / "data"
    (folder / "images").mkdir(parents=True)
    for name in ("camera.png", "horse.png", "rocket.jpg"):
        shutil.copy(PHOTOS / name, folder / "images" / name)
    return folder


def rows() -> list[dict]:
    return [
        {"id": "a", "prompt": "<image>\nWhat is this?", "chosen": "A camera man.", "rejected": "A dog.",
         "images": ["images/camera.png"], "score_chosen": 1.0, "score_rejected": 0.0},
        {"id": "b", "instruction": "Which animal?", "chosen": "A horse.", "rejected": "A cow.",
         "image": "images/horse.png"},
        {"id": "c", "prompt": "Two pictures: <image> and <image>", "chosen": "Different.", "rejected": "Same.",
         "images": ["images/rocket.jpg", "images/camera.png"]},
    ]


def write_jsonl(path: Path, items: list) -> Path:
    path.write_text("".join((item if isinstance(item, str) else json.dumps(item)) + "\n" for item in items))
    return path


def check_three(data, root: Path) -> None:
    assert data.format == "unidpo" and len(data) == 3 and data.skips.total == 0
    assert [r.id for r in data] == ["a", "b", "c"] and [r.index for r in data] == [0, 1, 2]
    assert data[1].prompt == "<image>\nWhich animal?"
    for record in data:
        assert record.image_root == str(root.resolve())
        assert all(load_image(ref, record.image_root).mode == "RGB" for ref in record.images)


# --- loaders -------------------------------------------------------------------------------------

def test_json_list_and_data_object(root):
    (root / "list.json").write_text(json.dumps(rows()))
    (root / "obj.json").write_text(json.dumps({"version": 1, "data": rows()}))
    check_three(load_preference_data(root / "list.json"), root)
    check_three(load_preference_data(str(root / "obj.json"), format="auto"), root)
    (root / "bad.json").write_text(json.dumps({"records": rows()}))
    with pytest.raises(ValueError, match="expected a JSON list of records or an object with a list under 'data'"):
        load_preference_data(root / "bad.json")


def test_jsonl_skips_blank_lines(root):
    path = write_jsonl(root / "train.jsonl", [rows()[0], "", "   ", rows()[1], rows()[2]])
    check_three(load_preference_data(path), root)


def test_parquet_with_embedded_images(root, tmp_path):
    table = {"question": ["What?", "Which?"], "chosen": ["A camera.", "A horse."], "rejected": ["A cup.", "A cow."],
             "image": [{"bytes": (root / "images" / n).read_bytes(), "path": n} for n in ("camera.png", "horse.png")],
             "idx": [10, 11]}
    ds = datasets.Dataset.from_dict(table).cast_column("image", datasets.Image())
    ds.to_parquet(str(tmp_path / "rlaif.parquet"))
    data = load_preference_data(tmp_path / "rlaif.parquet")
    assert data.format == "rlaif_v" and [r.id for r in data] == ["10", "11"]
    assert all(isinstance(r.images[0], bytes) for r in data)  # never decoded at load time
    assert load_image(data[1].images[0], None).size == (400, 328)


def test_saved_dataset_and_dataset_dict(root, tmp_path):
    features = datasets.Features({"prompt": datasets.Value("string"), "chosen": datasets.Value("string"),
                                  "rejected": datasets.Value("string"), "images": datasets.List(datasets.Image())})
    ds = datasets.Dataset.from_dict({"prompt": ["Q1", "Q2"], "chosen": ["yes", "no"], "rejected": ["no", "yes"],
                                     "images": [[str(root / "images" / "camera.png")],
                                                [str(root / "images" / "rocket.jpg")]]}, features=features)
    ds.save_to_disk(str(tmp_path / "saved"))
    data = load_preference_data(tmp_path / "saved")
    assert data.format == "unidpo" and len(data) == 2
    assert all(isinstance(r.images[0], bytes) for r in data)  # save_to_disk embeds the files
    assert data[0].prompt == "<image>\nQ1" and data[0].image_root == str((tmp_path / "saved").resolve())

    datasets.DatasetDict({"train": ds, "test": ds.select([1])}).save_to_disk(str(tmp_path / "dict"))
    assert [r.chosen for r in load_preference_data(tmp_path / "dict", split="test")] == ["no"]
    with pytest.raises(ValueError, match=r"splits \['test', 'train'\]; split='dev'"):
        load_preference_data(tmp_path / "dict", split="dev")


def test_local_folder_of_data_files(tmp_path):
    folder = tmp_path / "repo"
    folder.mkdir()
    datasets.Dataset.from_list([{"prompt": "Q", "chosen": "a", "rejected": "b"}]).to_parquet(
        str(folder / "train.parquet"))
    data = load_preference_data(folder)
    assert len(data) == 1 and data[0].image_root == str(folder.resolve())


def test_hub_id_dispatches_to_load_dataset(monkeypatch, tmp_path):
    calls = []

    def fake_load_dataset(path, split=None, **kwargs):
        calls.append((path, split, kwargs))
        return datasets.Dataset.from_list([{"question": "Q?", "chosen": "yes", "rejected": "no", "idx": 3,
                                            "image": "pixel.png"}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (2, 2)).save(tmp_path / "pixel.png")
    data = load_preference_data("openbmb/RLAIF-V-Dataset", split="train[:10]")
    assert calls == [("openbmb/RLAIF-V-Dataset", "train[:10]", {})]
    assert data.format == "rlaif_v" and data[0].id == "3" and data.source == "openbmb/RLAIF-V-Dataset"
    assert data[0].image_root == str(tmp_path.resolve())


def test_missing_local_files_are_not_sent_to_the_hub(monkeypatch, tmp_path):
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("hub called"))
    for source in (tmp_path / "nope.jsonl", "data/nope.parquet", "./nope", str(tmp_path / "nope")):
        with pytest.raises(FileNotFoundError, match="does not exist"):
            load_preference_data(source)
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="unsupported file type '.csv'"):
        load_preference_data(tmp_path / "x.csv")


def test_argument_checks(tmp_path):
    with pytest.raises(ValueError, match="on_bad_record must be 'error' or 'skip'"):
        load_preference_data([], on_bad_record="ignore")
    with pytest.raises(FileNotFoundError, match="image_root"):
        load_preference_data([], image_root=tmp_path / "missing")


def test_image_root_default_and_explicit(root, tmp_path):
    (root / "sub").mkdir()
    row = {"id": "r", "prompt": "Q", "chosen": "a", "rejected": "b", "images": ["camera.png"]}
    path = write_jsonl(root / "sub" / "d.jsonl", [row])
    with pytest.raises(BadRecordError, match="missing_image"):  # default root: the file's folder (sub/)
        load_preference_data(path)
    data = load_preference_data(path, image_root=root / "images")
    assert data[0].image_root == str((root / "images").resolve())
    row["images"] = ["../images/camera.png"]  # leaves sub/: refused even though the file exists
    with pytest.raises(BadRecordError, match="image_outside_root"):
        load_preference_data(write_jsonl(root / "sub" / "e.jsonl", [row]))


def test_limit_counts_good_records(root):
    bad = {"id": "x", "prompt": "Q", "chosen": "", "rejected": "b"}
    path = write_jsonl(root / "d.jsonl", [bad] + rows())
    data = load_preference_data(path, limit=2, on_bad_record="skip")
    assert [r.id for r in data] == ["a", "b"] and data.skips.counts == {"empty_response": 1}
    assert len(load_preference_data(path, limit=0)) == 0


# --- bad records ---------------------------------------------------------------------------------

def base(**change) -> dict:
    row = {"id": "bad-2", "prompt": "Look: <image>", "chosen": "Yes.", "rejected": "No.",
           "images": ["images/camera.png"]}
    row.update(change)
    return {k: v for k, v in row.items() if v is not ...}


BAD = {
    "placeholder_mismatch": base(prompt="<image> <image>"),
    "empty_response": base(chosen="   "),
    "non_string_response": base(rejected=7),
    "identical_responses": base(rejected=" Yes.\n"),
    "bad_score": base(score_chosen="NaN", score_rejected=1),
    "missing_image": base(images=["images/nope.png"]),
    "corrupt_image": base(images=["images/broken.png"]),
    "image_outside_root": base(images=["../outside.png"]),
    "image_too_large": base(images=["images/big.png"]),
    "missing_field": base(rejected=...),
    "invalid_json": '{"id": "bad-2", "prompt": oops}',
}


@pytest.fixture
def bad_root(root: Path) -> Path:
    (root / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    Image.new("RGB", (2, 2)).save(root.parent / "outside.png")
    Image.new("L", (3000, 3000)).save(root / "images" / "big.png")
    return root


@pytest.mark.parametrize("reason", sorted(BAD))
def test_each_bad_record_kind_names_record_and_reason(bad_root, reason):
    path = write_jsonl(bad_root / "d.jsonl", rows()[:2] + [BAD[reason]])
    with pytest.raises(BadRecordError) as info:
        load_preference_data(path, max_image_pixels=2000 * 2000)
    error = info.value
    assert error.reason == reason and error.index == 2
    where = "record 2 (id=None)" if reason == "invalid_json" else "record 2 (id='bad-2')"
    assert str(error).startswith(f"{where}: {reason}: "), str(error)
    data = load_preference_data(path, on_bad_record="skip", max_image_pixels=2000 * 2000)
    assert [r.id for r in data] == ["a", "b"] and data.skips.counts == {reason: 1}


def test_invalid_json_names_the_line(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", ["", "[1, 2]", "{"])
    data = load_preference_data(path, on_bad_record="skip")
    assert data.skips.counts == {"invalid_json": 2}
    assert "line 2: expected a JSON object, got list" in data.skips.examples["invalid_json"]
    path = write_jsonl(tmp_path / "e.jsonl", ['{"prompt": "q", "chosen": "a", "rejected": "b"}', "{"])
    with pytest.raises(BadRecordError, match=r"record 1 \(id=None\): invalid_json: line 2"):
        load_preference_data(path)


def test_skip_counts_every_reason_and_logs_summary(bad_root, caplog):
    vl_tie = {"id": "t", "instruction": "Q", "completions": [{"response": "x", "annotations": {"H": 3}},
                                                             {"response": "y", "annotations": {"H": 3}}]}
    path = write_jsonl(bad_root / "d.jsonl", rows() + list(BAD.values()) + [BAD["empty_response"], BAD["bad_score"]])
    with caplog.at_level(logging.WARNING, logger="mm_unidpo.data.records"):
        data = load_preference_data(path, on_bad_record="skip", max_image_pixels=2000 * 2000)
    assert [r.id for r in data] == ["a", "b", "c"]
    expected = {reason: 1 for reason in BAD}
    expected["empty_response"] = expected["bad_score"] = 2
    assert dict(data.skips.counts) == expected and data.skips.total == len(BAD) + 2
    assert "skipped 13 bad records" in caplog.text and "placeholder_mismatch: 1" in caplog.text

    data = load_preference_data([vl_tie, vl_tie], on_bad_record="skip")
    assert len(data) == 0 and data.skips.counts == {"no_preference": 2}


# --- save / load round trip ----------------------------------------------------------------------

def test_round_trip_paths_bytes_pil_chat_and_scores(root, tmp_path):
    photo = Image.open(root / "images" / "horse.png")
    photo.load()
    records = [
        PreferenceRecord(prompt="<image>\nWhat?", chosen="A camera.", rejected="A cup.", images=["images/camera.png"],
                         score_chosen=0.75, score_rejected=-1.0, id="p", image_root=str(root)),
        PreferenceRecord(prompt=[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Héllo?"}]}],
                         chosen="Hi.", rejected="Bye.", images=[(root / "images" / "rocket.jpg").read_bytes()]),
        PreferenceRecord(prompt="Two: <image> <image>", chosen="x", rejected="y",
                         images=[photo, "images/camera.png"], id="42", image_root=str(root)),
        PreferenceRecord(prompt="Text only", chosen="x", rejected="y"),
    ]
    out = save_preference_data(records, root / "out.jsonl")
    loaded = load_preference_data(out)
    assert loaded.format == "unidpo" and len(loaded) == len(records)
    for before, after in zip(records, loaded):
        assert (after.prompt, after.chosen, after.rejected, after.id) == \
            (before.prompt, before.chosen, before.rejected, before.id)
        assert (after.score_chosen, after.score_rejected) == (before.score_chosen, before.score_rejected)
        assert len(after.images) == len(before.images)
    assert loaded[0].images == ["images/camera.png"]
    assert loaded[1].images == [records[1].images[0]]  # the same JPEG bytes, not re-encoded
    restored = load_image(loaded[2].images[0], None)
    assert np.array_equal(np.asarray(restored), np.asarray(load_image(photo, None)))  # PNG: lossless
    # saving what was loaded gives the same file
    again = save_preference_data(loaded, tmp_path / "again.jsonl", image_root=root)
    assert again.read_text() == out.read_text()


def test_save_elsewhere_rewrites_relative_paths_or_refuses(root, tmp_path):
    record = PreferenceRecord(prompt="<image>", chosen="a", rejected="b", images=["images/camera.png"],
                              image_root=str(root))
    (root / "exports").mkdir()
    with pytest.raises(ValueError, match="outside the image root"):
        save_preference_data([record], root / "exports" / "x.jsonl")
    assert not (root / "exports" / "x.jsonl").exists() and not list((root / "exports").iterdir())
    path = save_preference_data([record], root / "exports" / "x.jsonl", image_root=root)
    assert load_preference_data(path, image_root=root)[0].images == ["images/camera.png"]
    record.image_root = str(root / "images")
    record.images = ["camera.png"]
    path = save_preference_data([record], root / "y.jsonl")
    assert json.loads(path.read_text())["images"] == ["images/camera.png"]
    assert load_image(load_preference_data(path)[0].images[0], root).size == (512, 512)


def test_saved_bytes_are_base64_entries(tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (3, 3)).save(buffer, format="PNG")
    record = PreferenceRecord(prompt="<image>", chosen="a", rejected="b", images=[buffer.getvalue()])
    row = json.loads(save_preference_data([record], tmp_path / "x.jsonl").read_text())
    assert list(row["images"][0]) == ["bytes_b64"]
