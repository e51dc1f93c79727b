"""Image-contrast data: rejected_images (ours and ms-swift's rows) and the deterministic corrupted views."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mm_unidpo.data import BadRecordError, PreferenceRecord, load_preference_data
from mm_unidpo.data.corruption import (
    Corruption,
    alpha_bar,
    contrast_images,
    crop_box,
    parse_corruption,
    record_generator,
)
from mm_unidpo.data.loading import save_preference_data


def gradient_png(path, size=(40, 30), shift=0):
    w, h = size
    x = (np.arange(w)[None, :, None] * 6 + np.arange(h)[:, None, None] * 3 + np.arange(3) * 40 + shift) % 256
    Image.fromarray(x.astype(np.uint8)).save(path)
    return path.name


def swift_row(**changes):
    row = {
        "id": "s-1",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "<image>What is it?"},
            {"role": "assistant", "content": "A gradient."},
        ],
        "rejected_response": "A dog.",
        "images": ["a.png"],
        "rejected_images": ["b.png"],
    }
    row.update(changes)
    return row


def test_swift_rows_with_rejected_images_and_a_round_trip(tmp_path):
    gradient_png(tmp_path / "a.png"), gradient_png(tmp_path / "b.png", shift=90)
    data = load_preference_data([swift_row()], image_root=tmp_path)
    record = data[0]
    assert data.format == "swift"
    assert record.prompt == swift_row()["messages"][:2]  # a system turn keeps the chat form
    assert (record.chosen, record.rejected, record.images, record.rejected_images) == (
        "A gradient.",
        "A dog.",
        ["a.png"],
        ["b.png"],
    )
    saved = save_preference_data(data, tmp_path / "saved.jsonl")
    again = load_preference_data(saved)
    assert (again.format, again[0].prompt, again[0].rejected_images) == ("trl", record.prompt, ["b.png"])
    plain = load_preference_data([swift_row(rejected_images=None)], image_root=tmp_path)[0]
    assert plain.rejected_images is None  # the rejected response sees the prompt's images


@pytest.mark.parametrize(
    "change, words",
    [
        ({"rejected_images": ["b.png", "b.png"]}, "placeholder_mismatch: rejected_images has 2 image"),
        ({"rejected_images": ["missing.png"]}, r"missing_image: image 'missing.png' not found"),
        ({"messages": [{"role": "user", "content": "x"}]}, "must end with the chosen assistant turn"),
        ({"messages": [{"role": "assistant", "content": "x"}]}, "no user turn before"),
    ],
)
def test_bad_swift_rows_name_the_record(tmp_path, change, words):
    gradient_png(tmp_path / "a.png"), gradient_png(tmp_path / "b.png")
    with pytest.raises(BadRecordError, match=r"record 0 \(id='s-1'\): .*" + words):
        load_preference_data([swift_row(**change)], image_root=tmp_path)
    skipped = load_preference_data([swift_row(**change), swift_row(id="ok")], image_root=tmp_path, on_bad_record="skip")
    assert [r.id for r in skipped] == ["ok"] and skipped.skips.total == 1


def test_ours_reads_rejected_images(tmp_path):
    gradient_png(tmp_path / "a.png"), gradient_png(tmp_path / "b.png")
    row = {
        "id": "u",
        "prompt": "<image>What?",
        "chosen": "x",
        "rejected": "y",
        "images": ["a.png"],
        "rejected_images": ["b.png"],
    }
    assert load_preference_data([row], image_root=tmp_path)[0].rejected_images == ["b.png"]


# ---- corrupted views -------------------------------------------------------------------------------------


def record(tmp_path, rid, shift=0, index=0):
    name = gradient_png(tmp_path / f"{rid}.png", shift=shift)
    return PreferenceRecord(
        prompt="<image>q", chosen="a", rejected="b", images=[name], id=rid, index=index, image_root=str(tmp_path)
    )


@pytest.mark.parametrize("kind", ["crop", "noise", "blank", "shuffle"])
def test_views_are_deterministic_per_record_and_seed(tmp_path, kind):
    pool = [record(tmp_path, f"r{i}", shift=40 * i, index=i) for i in range(4)]
    corruption = Corruption(kind, seed=3)
    first = [np.asarray(contrast_images(r, corruption, pool)[0]) for r in pool]
    again = [np.asarray(contrast_images(r, corruption, list(reversed(pool)))[0]) for r in pool[::-1]][::-1]
    original = [np.asarray(Image.open(tmp_path / f"r{i}.png").convert("RGB")) for i in range(4)]
    for view, repeat, image in zip(first, again, original):
        assert view.shape == image.shape  # the processor sees an image of the same size
        assert not np.array_equal(view, image)
        if kind != "shuffle":  # shuffle's choice depends on the pool's order; the others only on the record
            np.testing.assert_array_equal(view, repeat)
    if kind in ("crop", "noise"):
        other_seed = np.asarray(contrast_images(pool[0], Corruption(kind, seed=4), pool)[0])
        assert not np.array_equal(other_seed, first[0])
        assert not np.array_equal(first[0], first[1])
    if kind == "shuffle":
        assert any(np.array_equal(first[0], image) for image in original[1:])
    if kind == "blank":
        assert (first[0] == 128).all()


def test_crop_covers_1_to_20_percent_of_the_area():
    areas, aspects = [], []
    for seed in range(300):
        left, top, right, bottom = crop_box((120, 90), np.random.default_rng(seed), (0.01, 0.2))
        assert 0 <= left < right <= 120 and 0 <= top < bottom <= 90
        areas.append((right - left) * (bottom - top) / (120 * 90))
        aspects.append((right - left) / (bottom - top))
    assert 0.007 <= min(areas) and max(areas) <= 0.22  # 1–20%, up to rounding the sides to pixels
    assert np.mean(areas) == pytest.approx(0.105, abs=0.015)  # uniform on [0.01, 0.2]
    assert 0.6 <= min(aspects) and max(aspects) <= 1.6  # [3/4, 4/3], up to rounding
    assert crop_box((3, 1000), np.random.default_rng(0), (0.9, 1.0)) == (0, 0, 3, 1000)  # no fit: whole image


def test_noise_follows_chips_schedule(tmp_path):
    # CHiP's schedule at its default step 500: √ᾱ = 0.8630, √(1 − ᾱ) = 0.5052 (printed by its own code)
    assert math.sqrt(alpha_bar(500)) == pytest.approx(0.8630172610282898, abs=1e-6)
    assert math.sqrt(1 - alpha_bar(999)) == pytest.approx(0.9585148692131042, abs=1e-6)
    flat = PreferenceRecord(
        prompt="<image>q", chosen="a", rejected="b", id="f", images=[Image.new("RGB", (64, 64), (128, 128, 128))]
    )
    x = np.asarray(contrast_images(flat, Corruption("noise", noise_step=500), [])[0]) / 127.5 - 1
    # x_0 = 128/127.5 − 1 ≈ 0.004: x_t ≈ N(√ᾱ·x_0, 1 − ᾱ) before clipping to [−1, 1]
    assert x.mean() == pytest.approx(0.8630 * (128 / 127.5 - 1), abs=0.02)
    assert 0.35 < x.std() < 0.5  # 0.505 clipped at ±1


def test_seed_is_the_same_in_another_process():
    """Not Python's salted `hash`: a process with another PYTHONHASHSEED draws the same view."""
    code = (
        "from mm_unidpo.data.corruption import Corruption, record_generator; from mm_unidpo.data import "
        "PreferenceRecord as R; print(record_generator(Corruption('crop'), R('q', 'a', 'b', id='abc'), 2)"
        ".integers(1 << 30))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "123", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    here = record_generator(Corruption("crop"), PreferenceRecord("q", "a", "b", id="abc"), 2).integers(1 << 30)
    assert int(out) == int(here)
    assert record_generator(Corruption("crop"), PreferenceRecord("q", "a", "b", id="abc"), 1).integers(1 << 30) != here


def test_config_values_are_checked_naming_the_key():
    assert parse_corruption("blank") == Corruption("blank")
    assert parse_corruption({"kind": "noise", "noise_step": 250}).noise_step == 250
    assert parse_corruption(None) is None
    for value, words in [
        ("jpeg", "data.corruption.kind must be one of crop, noise, blank, shuffle, got 'jpeg'"),
        ({"kind": "crop", "scale": 1}, r"data.corruption: unknown key\(s\) \['scale'\]"),
        ({"kind": "noise", "noise_step": 1000}, r"data.corruption.noise_step must be an integer in \[0, 999\]"),
        ({"kind": "crop", "crop_scale": [0.3, 0.2]}, "data.corruption.crop_scale must be"),
        ({"kind": "crop", "seed": -1}, "data.corruption.seed must be an integer >= 0"),
        (3, "data.corruption must be a kind"),
    ]:
        with pytest.raises(ValueError, match=words):
            parse_corruption(value)


def test_a_record_without_images_is_named(tmp_path):
    text = PreferenceRecord(prompt="q", chosen="a", rejected="b", id="t", index=5)
    with pytest.raises(BadRecordError, match=r"record 5 \(id='t'\): missing_image: data.corruption 'crop'"):
        contrast_images(text, Corruption("crop"), [])
    lone = record(tmp_path, "lone")
    with pytest.raises(BadRecordError, match="needs another record with an image"):
        contrast_images(lone, Corruption("shuffle"), [lone])


def test_train_config_checks_corruption_and_image_term():
    from mm_unidpo.train.config import ConfigError, config_from_dict

    def config(data=None, loss=None):
        raw = {
            "model": {"name_or_path": "x"},
            "data": {"train": "d.jsonl", **(data or {})},
            "loss": loss or {"name": "dpo"},
            "train": {"output_dir": "out"},
        }
        return config_from_dict(raw).validate()

    assert config({"corruption": {"kind": "crop", "seed": 1}}, {"name": "unidpo", "params": {"image_term": "mdpo"}})
    with pytest.raises(ConfigError, match="data.corruption.kind must be one of"):
        config({"corruption": "rotate"})
    with pytest.raises(ConfigError, match="image_term needs data.corruption"):
        config(loss={"name": "dpo", "params": {"image_term": "chip"}})
    with pytest.raises(ConfigError, match="loss.params.image_term: 'ipo' has no sigmoid logit"):
        config({"corruption": "noise"}, {"name": "ipo", "params": {"image_term": "chip"}})
