"""Vision pretraining: the demo's stand-in for the CLIP pretraining a real LLaVA starts from.

A LLaVA is never trained from random pixels to words in one go: its vision tower arrives pretrained.
Here the tower (transformers' `CLIPVisionModel` inside the LLaVA, random init) is pretrained briefly to
name what is in each quadrant of a scene (object kind and colour, or nothing) from its patch token,
the same hidden states the LLaVA projector reads (`vision_feature_layer=-1`). Training uses the plain
`transformers.Trainer`. The probe's accuracy on unseen scenes is reported: it bounds how well the
captioner can see.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from .world import COLOURS, OBJECTS, Scene

EMPTY_OBJECT, NO_COLOUR = len(OBJECTS), len(COLOURS)


def quadrant_labels(scene: Scene) -> tuple[list[int], list[int]]:
    """Per quadrant (reading order): object index or EMPTY_OBJECT, colour index or NO_COLOUR."""
    objects, colours = [EMPTY_OBJECT] * 4, [NO_COLOUR] * 4
    for thing in scene.things:
        objects[thing.cell] = OBJECTS.index(thing.name)
        colours[thing.cell] = list(COLOURS).index(thing.colour)
    return objects, colours


class QuadrantProbe(nn.Module):
    """The vision tower plus two linear heads on its patch tokens (one patch per quadrant)."""

    def __init__(self, vision_tower: nn.Module, hidden: int):
        super().__init__()
        self.tower = vision_tower
        self.objects = nn.Linear(hidden, len(OBJECTS) + 1)
        self.colours = nn.Linear(hidden, len(COLOURS) + 1)

    def forward(
        self,
        pixel_values: torch.Tensor,
        object_labels: torch.Tensor | None = None,
        colour_labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        # hidden_states[-1] without CLS: exactly what LLaVA's projector gets with feature layer -1.
        patches = self.tower(pixel_values, output_hidden_states=True).hidden_states[-1][:, 1:]
        quadrants = _pool_quadrants(patches)
        objects, colours = self.objects(quadrants), self.colours(quadrants)
        out = {"object_logits": objects, "colour_logits": colours}
        if object_labels is not None and colour_labels is not None:
            out["loss"] = F.cross_entropy(objects.flatten(0, 1), object_labels.flatten()) + F.cross_entropy(
                colours.flatten(0, 1), colour_labels.flatten()
            )
        return out


def _pool_quadrants(patches: torch.Tensor) -> torch.Tensor:
    """(B, g*g, H) patch tokens in raster order -> (B, 4, H) means over each quadrant's patches."""
    b, n, h = patches.shape
    g = round(n**0.5)
    grid = patches.reshape(b, 2, g // 2, 2, g // 2, h)  # (B, qrow, row, qcol, col, H)
    return grid.mean(dim=(2, 4)).reshape(b, 4, h)


class ScenePixels(Dataset):
    def __init__(self, scenes: list[Scene], image_processor: Any):
        pixels = image_processor(images=[s.image for s in scenes], return_tensors="pt")["pixel_values"]
        labels = [quadrant_labels(s) for s in scenes]
        self.pixels = pixels
        self.objects = torch.tensor([o for o, _ in labels])
        self.colours = torch.tensor([c for _, c in labels])

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.pixels[i], "object_labels": self.objects[i], "colour_labels": self.colours[i]}


def demo_training_args(output_dir: Path, *, epochs: float, batch_size: int, learning_rate: float, seed: int) -> Any:
    """The demo's `TrainingArguments` for its supervised stages (vision pre-training, SFT): CPU, cosine
    schedule, no checkpoints, seeded data order."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(output_dir / "trainer"),
        num_train_epochs=epochs,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,
        weight_decay=0.0,
        logging_steps=10,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=seed,
        data_seed=seed,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        disable_tqdm=False,
    )


def pretrain_vision(
    model: Any,
    processor: Any,
    scenes: list[Scene],
    output_dir: Path,
    *,
    epochs: float,
    batch_size: int,
    learning_rate: float,
    seed: int,
) -> tuple[QuadrantProbe, list[dict[str, float]]]:
    """Train the LLaVA's vision tower in place on quadrant labels; returns the probe (tower + heads)
    and the Trainer's log history."""
    from transformers import Trainer

    probe = QuadrantProbe(model.model.vision_tower, model.config.vision_config.hidden_size)
    args = demo_training_args(output_dir, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed)
    trainer = Trainer(model=probe, args=args, train_dataset=ScenePixels(scenes, processor.image_processor))
    trainer.train()
    return probe, trainer.state.log_history


@torch.no_grad()
def probe_accuracy(probe: QuadrantProbe, scenes: list[Scene], processor: Any) -> dict[str, float]:
    """Per-quadrant object and colour accuracy of the pretrained tower's probe on `scenes`."""
    was_training = probe.training
    probe.eval()
    data = ScenePixels(scenes, processor.image_processor)
    out = probe(data.pixels)
    objects = out["object_logits"].argmax(-1)
    colours = out["colour_logits"].argmax(-1)
    occupied = data.objects != EMPTY_OBJECT
    probe.train(was_training)
    return {
        "object": float((objects == data.objects).float().mean()),
        "object_occupied": float((objects == data.objects)[occupied].float().mean()),
        "colour_occupied": float((colours == data.colours)[occupied].float().mean()),
    }
