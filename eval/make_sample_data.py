"""Regenerate the sample data of the offline tasks in this folder (deterministic; run from anywhere).

    python eval/make_sample_data.py

Writes ``data/images/shapes_*.png`` (96x96 synthetic drawings of coloured shapes, a few hundred bytes
each, so they ship in the repository), and the POPE-, CHAIR- and AMBER-format JSON-lines files that
point at them. The objects are shapes, not COCO objects: these tasks exercise the whole evaluation
path offline, they do not measure anything about a real model. See README.md for real benchmarks.
"""

from __future__ import annotations

import json
import math
import os

from PIL import Image, ImageDraw

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
SIZE = 96
RED, GREEN, BLUE, YELLOW = (220, 40, 40), (40, 170, 60), (40, 80, 220), (235, 200, 30)

# image name -> (shapes drawn as (kind, colour, box)), objects in it, objects a model might invent
IMAGES = {
    "shapes_1.png": ([("circle", RED, (24, 24, 72, 72))], ["circle"], ["square"]),
    "shapes_2.png": ([("square", BLUE, (8, 12, 44, 48)), ("triangle", GREEN, (52, 48, 90, 86))],
                     ["square", "triangle"], ["circle"]),
    "shapes_3.png": ([("star", YELLOW, (6, 6, 50, 50)), ("circle", RED, (54, 50, 88, 84))],
                     ["star", "circle"], ["triangle"]),
    "shapes_4.png": ([("triangle", GREEN, (20, 16, 76, 80))], ["triangle"], ["star"]),
}
SYNONYMS = """# Object table of the sample CHAIR / AMBER tasks (format of CHAIR's synonyms.txt: object, synonyms...)
circle, disc, disk, ring, round shape
square, rectangle, box
triangle, pyramid
star
"""


def _draw(kind: str, colour: tuple[int, int, int], box: tuple[int, int, int, int], draw: ImageDraw.ImageDraw):
    x0, y0, x1, y1 = box
    if kind == "circle":
        draw.ellipse(box, fill=colour)
    elif kind == "square":
        draw.rectangle(box, fill=colour)
    elif kind == "triangle":
        draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=colour)
    elif kind == "star":  # five points, inner radius 0.4 of the outer one
        cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
        points = [(cx + (r if i % 2 == 0 else 0.4 * r) * math.sin(math.pi * i / 5),
                   cy - (r if i % 2 == 0 else 0.4 * r) * math.cos(math.pi * i / 5)) for i in range(10)]
        draw.polygon(points, fill=colour)


def main() -> None:
    os.makedirs(os.path.join(DATA, "images"), exist_ok=True)
    pope, chair, amber = [], [], []
    for k, (name, (shapes, objects, hallu)) in enumerate(IMAGES.items()):
        image = Image.new("RGB", (SIZE, SIZE), (255, 255, 255))
        draw = ImageDraw.Draw(image)
        for shape in shapes:
            _draw(*shape, draw)
        image.save(os.path.join(DATA, "images", name), optimize=True)
        path = f"images/{name}"
        pope.append({"question_id": 2 * k, "image": path, "text": f"Is there a {objects[0]} in the image?",
                     "label": "yes"})
        pope.append({"question_id": 2 * k + 1, "image": path, "text": f"Is there a {hallu[0]} in the image?",
                     "label": "no"})
        chair.append({"image_id": k, "image": path, "objects": objects})
        amber.append({"id": k, "image": path, "truth": objects, "hallu": hallu})
    for fname, rows in (("pope_sample.jsonl", pope), ("chair_sample.jsonl", chair), ("amber_g_sample.jsonl", amber)):
        with open(os.path.join(DATA, fname), "w", encoding="utf-8") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
    with open(os.path.join(DATA, "shape_synonyms.txt"), "w", encoding="utf-8") as f:
        f.write(SYNONYMS)


if __name__ == "__main__":
    main()
