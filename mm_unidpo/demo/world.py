"""The demo's synthetic visual world: small seeded images of coloured shapes and their ground truth.

Eight object kinds (shapes), six colours, one to four objects per image, each in its own quadrant with
a random size and jitter, on a textured, noisy background with clutter lines that are not objects.
Objects co-occur the way things do in photo collections: every object has one *partner* that joins it
in half the scenes it anchors (star + moon, square + triangle, ...; any other pair meets only by chance),
and some objects are more common than others. That skew is what a captioner learns as a prior, and what
POPE's "popular" and "adversarial" splits probe.

The ground-truth object list of every image is written into the PNG itself (a text chunk), so a rule
judge can score a response against any saved image without a side file (see :mod:`.judge`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from PIL.PngImagePlugin import PngInfo

OBJECTS = ("circle", "square", "triangle", "star", "cross", "ring", "moon", "diamond")
# Each object's frequent companion (symmetric): the object a noisy caption names when it is absent.
PARTNER = {
    "star": "moon",
    "moon": "star",
    "square": "triangle",
    "triangle": "square",
    "circle": "cross",
    "cross": "circle",
    "ring": "diamond",
    "diamond": "ring",
}
# How often each object is the "anchor" of a scene: a long tail, like object frequencies in photos.
POPULARITY = {
    "circle": 3.0,
    "square": 3.0,
    "star": 2.5,
    "ring": 1.5,
    "triangle": 1.2,
    "cross": 1.0,
    "moon": 0.8,
    "diamond": 0.8,
}
COLOURS = {
    "red": (215, 45, 40),
    "green": (40, 170, 70),
    "blue": (45, 95, 225),
    "yellow": (235, 210, 40),
    "purple": (150, 60, 195),
    "white": (235, 235, 235),
}
GROUND_TRUTH_KEY = "mm_unidpo_objects"  # PNG text chunk: "red star;yellow moon"


@dataclass
class WorldConfig:
    """How scenes are drawn. `p_partner` is P(partner present | anchor present)."""

    image_size: int = 64
    p_partner: float = 0.5
    p_two_anchors: float = 0.45
    size_range: tuple[float, float] = (0.55, 0.8)  # object size as a fraction of its quadrant
    jitter: tuple[float, float] = (0.3, 0.7)  # where in its quadrant an object sits (of the free room)
    noise: float = 10.0  # std of the background pixel noise
    clutter_lines: int = 3


@dataclass
class Thing:
    name: str
    colour: str
    cell: int  # quadrant 0..3 in reading order (top-left, top-right, bottom-left, bottom-right)

    def phrase(self) -> str:
        return f"{self.colour} {self.name}"


@dataclass
class Scene:
    """One image and what is really in it. `things` are in reading order."""

    id: str
    things: list[Thing]
    image: Image.Image = field(repr=False)

    @property
    def objects(self) -> list[str]:
        return [t.name for t in self.things]

    def annotation(self) -> str:
        return ";".join(t.phrase() for t in self.things)


# ---- text: the prompts and the clean forms of the answers -------------------------------------------

CAPTION_PROMPT = "Describe the image."
QUESTION = "Is there a {} in the image?"
YES, NO = "Yes.", "No."


def caption(phrases: list[str]) -> str:
    """'A red star, a yellow moon and a blue square.' from ['red star', 'yellow moon', 'blue square']."""
    items = [f"a {p}" for p in phrases]
    text = items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
    return text[0].upper() + text[1:] + "."


def vocabulary_corpus() -> str:
    """Every word the demo's prompts and answers use, in context: the tokenizer is trained on it so
    that each object and colour is one token (short sequences, and one decision per object)."""
    colours, objects = list(COLOURS), list(OBJECTS)
    lines = []
    for i, name in enumerate(objects):
        # The chat template's role words ("USER:", "ASSISTANT:") are in every sequence: whole tokens too.
        lines += [f"USER: {QUESTION.format(name)} ASSISTANT: {YES}", f"USER: {QUESTION.format(name)} ASSISTANT: {NO}"]
        for j, colour in enumerate(colours):
            other = objects[(i + j + 1) % len(objects)]
            text = caption(
                [
                    f"{colour} {name}",
                    f"{colours[(j + 1) % len(colours)]} {other}",
                    f"{colours[(j + 2) % len(colours)]} {objects[(i + 3) % len(objects)]}",
                ]
            )
            lines.append(f"USER: {CAPTION_PROMPT} ASSISTANT: {text}")
    return "\n".join(lines)


def sample_objects(rng: np.random.Generator, config: WorldConfig) -> list[str]:
    """The objects of one scene: one or two anchors by popularity, each joined by its partner with
    probability `p_partner`."""
    names = list(POPULARITY)
    weights = np.array([POPULARITY[n] for n in names])
    n_anchors = 2 if rng.random() < config.p_two_anchors else 1
    anchors = list(rng.choice(names, size=n_anchors, replace=False, p=weights / weights.sum()))
    chosen: list[str] = []
    for anchor in anchors:
        if anchor not in chosen:
            chosen.append(str(anchor))
        partner = PARTNER[str(anchor)]
        if partner not in chosen and rng.random() < config.p_partner:
            chosen.append(partner)
    return chosen[:4]


def _shape_mask(name: str, box: tuple[float, float, float, float], size: int) -> Image.Image:
    """A 0/255 mask of one shape inside `box` (x0, y0, x1, y1) on a `size` x `size` canvas."""
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    x0, y0, x1, y1 = box
    cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
    if name == "circle":
        draw.ellipse(box, fill=255)
    elif name == "square":
        k = 0.85
        draw.rectangle((cx - k * r, cy - k * r, cx + k * r, cy + k * r), fill=255)
    elif name == "triangle":
        draw.polygon([(cx, y0), (x1, y1 - 0.1 * r), (x0, y1 - 0.1 * r)], fill=255)
    elif name == "star":
        points = []
        for i in range(10):
            radius = r if i % 2 == 0 else 0.42 * r
            angle = -math.pi / 2 + i * math.pi / 5
            points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
        draw.polygon(points, fill=255)
    elif name == "cross":
        w = 0.3 * r
        draw.rectangle((cx - w, y0, cx + w, y1), fill=255)
        draw.rectangle((x0, cy - w, x1, cy + w), fill=255)
    elif name == "ring":
        draw.ellipse(box, fill=255)
        inner = 0.55 * r
        draw.ellipse((cx - inner, cy - inner, cx + inner, cy + inner), fill=0)
    elif name == "moon":
        draw.ellipse(box, fill=255)
        shift = 0.55 * r
        draw.ellipse((x0 + shift, y0 - 0.2 * r, x1 + shift, y1 - 0.2 * r), fill=0)
    elif name == "diamond":
        draw.polygon([(cx, y0), (x1 - 0.2 * r, cy), (cx, y1), (x0 + 0.2 * r, cy)], fill=255)
    else:
        raise ValueError(f"unknown object {name!r}")
    return mask


def _background(rng: np.random.Generator, size: int, config: WorldConfig) -> Image.Image:
    """A muted, tinted gradient with pixel noise and a few clutter lines (not objects)."""
    base = rng.uniform(40, 120, size=3)
    tilt = rng.uniform(-25, 25, size=3)
    ramp = np.linspace(-1, 1, size)[None, :, None] * tilt[None, None, :]
    pixels = base[None, None, :] + ramp + rng.normal(0, config.noise, size=(size, size, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.6))
    draw = ImageDraw.Draw(image)
    for _ in range(config.clutter_lines):
        tone = tuple(int(v) for v in np.clip(base + rng.uniform(-35, 35, size=3), 0, 255))
        xy = [tuple(rng.uniform(0, size, size=2)) for _ in range(2)]
        draw.line(xy, fill=tone, width=1)
    return image


def render_scene(rng: np.random.Generator, names: list[str], config: WorldConfig, scene_id: str) -> Scene:
    """Draw `names` into random distinct quadrants (4x supersampled, then reduced: smooth edges)."""
    size, scale = config.image_size, 4 * config.image_size
    canvas = _background(rng, size, config).resize((scale, scale), Image.Resampling.NEAREST)
    cells = [int(c) for c in rng.permutation(4)[: len(names)]]
    things = []
    half = scale / 2
    for name, cell in zip(names, cells):
        colour = str(rng.choice(list(COLOURS)))
        side = rng.uniform(*config.size_range) * half
        slack = half - side
        x0 = (cell % 2) * half + rng.uniform(*config.jitter) * slack
        y0 = (cell // 2) * half + rng.uniform(*config.jitter) * slack
        rgb = np.clip(np.array(COLOURS[colour]) + rng.normal(0, 12, size=3), 0, 255).astype(int)
        # Drawn in a local tile (not the whole canvas): rendering thousands of scenes stays fast.
        left, top, tile = int(x0) - 1, int(y0) - 1, int(side) + 3
        fill = Image.new("RGB", (tile, tile), tuple(int(v) for v in rgb))
        mask = _shape_mask(name, (x0 - left, y0 - top, x0 - left + side, y0 - top + side), tile)
        canvas.paste(fill, (left, top), mask)
        things.append(Thing(name, colour, cell))
    image = canvas.resize((size, size), Image.Resampling.LANCZOS)
    things.sort(key=lambda t: t.cell)
    return Scene(scene_id, things, image)


def make_scenes(n: int, seed: int, config: WorldConfig, prefix: str) -> list[Scene]:
    """`n` seeded scenes; ids are `<prefix>-<k>`."""
    rng = np.random.default_rng(seed)
    return [render_scene(rng, sample_objects(rng, config), config, f"{prefix}-{k:05d}") for k in range(n)]


def save_scene(scene: Scene, folder: Path) -> str:
    """Write the PNG (ground truth in its text chunk); returns the file name."""
    folder.mkdir(parents=True, exist_ok=True)
    info = PngInfo()
    info.add_text(GROUND_TRUTH_KEY, scene.annotation())
    name = f"{scene.id}.png"
    scene.image.save(folder / name, pnginfo=info)
    return name


def read_annotation(image: Image.Image) -> list[tuple[str, str]] | None:
    """(colour, object) pairs from a saved scene PNG's text chunk, or None if it has none."""
    text = (getattr(image, "text", None) or {}).get(GROUND_TRUTH_KEY) or image.info.get(GROUND_TRUTH_KEY)
    if text is None:
        return None
    return [tuple(item.split(" ", 1)) for item in text.split(";") if item]


def cooccurrence(scenes: list[Scene]) -> dict[str, dict[str, int]]:
    """How often each pair of objects appears together (POPE's adversarial negatives use it)."""
    counts = {a: {b: 0 for b in OBJECTS if b != a} for a in OBJECTS}
    for scene in scenes:
        present = set(scene.objects)
        for a in present:
            for b in present - {a}:
                counts[a][b] += 1
    return counts


def frequency(scenes: list[Scene]) -> dict[str, int]:
    """In how many scenes each object appears (POPE's popular negatives use it)."""
    return {name: sum(name in s.objects for s in scenes) for name in OBJECTS}


def contact_sheet(scenes: list[Scene], path: Path, columns: int = 8, zoom: int = 2) -> None:
    """A grid of scenes with their ground truth underneath, for the report."""
    from PIL import ImageFont

    size = scenes[0].image.size[0] * zoom
    label_h = 22
    rows = math.ceil(len(scenes) / columns)
    sheet = Image.new("RGB", (columns * (size + 6), rows * (size + label_h + 6)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for k, scene in enumerate(scenes):
        x, y = (k % columns) * (size + 6) + 3, (k // columns) * (size + label_h + 6) + 3
        sheet.paste(scene.image.resize((size, size), Image.Resampling.NEAREST), (x, y))
        words = [t.name for t in scene.things]
        lines = [", ".join(words[:2]), ", ".join(words[2:])]
        for j, line in enumerate(lines):
            draw.text((x, y + size + 1 + 10 * j), line, fill=(30, 30, 30), font=font)
    sheet.save(path)
