"""`mm-unidpo train` with an image-side term: Uni-DPO + mDPO on tiny LLaVA and Qwen2-VL, contrast views
from data.corruption, rejected_images rows, and the precomputed reference cache holding the contrast."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mm_unidpo.train.config import config_from_dict
from mm_unidpo.train.run import train

IMAGES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "images"
pytestmark = pytest.mark.skipif(not IMAGES.is_dir(), reason=f"real photos not found at {IMAGES}")
PHOTOS = ["astronaut.png", "camera.png", "chelsea.png", "coffee.png", "horse.png", "rocket.jpg"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("image_terms")
    with open(root / "data.jsonl", "w") as f:
        for i in range(4):
            photo = PHOTOS[i % len(PHOTOS)]
            row = {
                "id": f"r{i}",
                "prompt": "<image>\nWhat is in the image?",
                "images": [photo],
                "chosen": f"It is a {photo.split('.')[0]}.",
                "rejected": "It is a red bus.",
                "score_chosen": 8.0,
                "score_rejected": 2.0,
            }
            if i == 3:  # an image-contrast pair: the rejected answer is scored with another photo
                row["rejected_images"] = [PHOTOS[(i + 1) % len(PHOTOS)]]
            f.write(json.dumps(row) + "\n")
    return root


def _config(family: str, workdir: Path, out: str, **reference) -> dict:
    from mm_unidpo.testing import tiny

    path = workdir / family
    if not path.is_dir():
        model, processor = tiny(family)
        model.save_pretrained(path)
        processor.save_pretrained(path)
    return {
        "model": {"name_or_path": str(path), "dtype": "float32"},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "data": {
            "train": str(workdir / "data.jsonl"),
            "image_root": str(IMAGES),
            "max_length": 256,
            "corruption": {"kind": "crop", "seed": 1},
            "preflight": False,
        },
        "loss": {"name": "unidpo", "params": {"image_term": "mdpo", "image_beta": 0.1}},
        "reference": reference,
        "train": {
            "output_dir": str(workdir / out),
            "learning_rate": 5e-3,
            "num_train_epochs": 1,
            "per_device_train_batch_size": 2,
            "logging_steps": 1,
            "save_strategy": "no",
            "seed": 0,
            "use_cpu": True,
            "disable_tqdm": True,
        },
    }


def _logged(output_dir: str) -> list[dict]:
    state = json.loads((Path(output_dir) / "trainer_state.json").read_text())
    return [e for e in state["log_history"] if "loss" in e]


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_unidpo_with_mdpo_trains(family, workdir):
    raw = _config(family, workdir, f"out_{family}")
    summary = train(config_from_dict(raw).validate())
    logs = _logged(raw["train"]["output_dir"])
    assert summary["global_step"] == 2 and len(logs) == 2
    for entry in logs:
        assert torch.isfinite(torch.tensor(entry["loss"]))
        assert entry["logps/chosen_contrast"] < 0 and "rewards/contrast_margin" in entry
        assert entry["loss/image_conditional"] > 0 and entry["loss/image_anchored"] > 0


@pytest.mark.slow
def test_precomputed_reference_holds_the_contrast(workdir):
    """The cached reference (its chosen-under-the-view column included) trains exactly as the live one."""
    live = _config("llava", workdir, "live")
    cached = _config("llava", workdir, "cached", precompute=True, batch_size=3)
    train(config_from_dict(live).validate())
    train(config_from_dict(cached).validate())
    (cache,) = (workdir / "cached" / "reference_cache").glob("ref-*.safetensors")
    column = load_file(str(cache))["chosen_contrast"]
    assert column.shape == (4,) and torch.isfinite(column).all()
    a = load_file(str(workdir / "live" / "final" / "adapter_model.safetensors"))
    b = load_file(str(workdir / "cached" / "final" / "adapter_model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_contrast_key_follows_the_corruption_and_the_records(workdir):
    from mm_unidpo.data import PreferenceRecord
    from mm_unidpo.train.run import _contrast_options

    def key(corruption, pool, loss=None):
        raw = {
            "model": {"name_or_path": "x"},
            "data": {"train": "d", "corruption": corruption},
            "loss": loss or {"name": "dpo", "params": {"image_term": "mdpo"}},
            "train": {"output_dir": "o"},
        }
        return _contrast_options(config_from_dict(raw).validate(), pool).get("contrast_key")

    pool = [PreferenceRecord("<image>q", "a", "b", images=["x.png"], id=f"r{i}", index=i) for i in range(3)]
    base = key("crop", pool)
    assert base is not None and base == key({"kind": "crop", "seed": 0}, pool)
    assert key({"kind": "crop", "seed": 1}, pool) != base and key("noise", pool) != base
    assert key("crop", pool[::-1]) != base  # the views are drawn per id and position: a reordered file
    assert key("crop", pool, {"name": "dpo"}) is None  # no image term: no contrast view scored
