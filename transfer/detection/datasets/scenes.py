"""Synthetic scenes: deterministic COCO-format detection/segmentation/keypoint datasets, no files needed.

Each image has 1-4 filled shapes on a noisy background, placed in separate grid cells (no occlusion,
so every polygon is the object's exact mask).  ``kind='instances'``: categories square, disc, triangle
with boxes and polygon masks.  ``kind='keypoints'``: one category, 'kite' (an axis-aligned diamond),
with 4 named keypoints (its vertices) and the flip map left<->right, in COCO's keypoint format.

    python -m transfer.detection.datasets.scenes -o data/scenes     # writes scenes_{instances,keypoints}_{train,val}
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pretrain.io import atomic_write_json
from transfer.detection.builtin_sets import BuiltinSet, declare

INSTANCE_CATEGORIES = ["square", "disc", "triangle"]
KEYPOINT_NAMES = ["top", "left", "right", "bottom"]
KEYPOINT_FLIP_MAP = [("left", "right")]
KEYPOINT_SKELETON = [[1, 2], [1, 3], [2, 4], [3, 4]]  # 1-based, COCO style
SPLIT_SEEDS = {"train": 0, "val": 1}


def _shape_polygon(kind: str, cx: float, cy: float, r: float, rot: float) -> list[tuple[float, float]]:
    n = {"square": 4, "triangle": 3, "disc": 32}[kind]
    offset = rot + (math.pi / 4 if kind == "square" else 0.0)
    return [(cx + r * math.cos(offset + 2 * math.pi * k / n), cy + r * math.sin(offset + 2 * math.pi * k / n))
            for k in range(n)]


def _area(poly) -> float:
    x, y = np.array(poly).T
    return float(0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def generate(out_dir: str | Path, kind: str = "instances", split: str = "train", num_images: int = 64,
             size: int = 128, seed: int = 0) -> Path:
    """Writes <out_dir>/images/*.png and <out_dir>/annotations.json; returns the json path."""
    if kind not in ("instances", "keypoints"):
        raise ValueError("kind is 'instances' or 'keypoints'")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, SPLIT_SEEDS.get(split, 2), 0 if kind == "instances" else 1])
    if kind == "instances":
        categories = [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(INSTANCE_CATEGORIES)]
    else:
        categories = [{"id": 1, "name": "kite", "supercategory": "shape", "keypoints": KEYPOINT_NAMES,
                       "skeleton": KEYPOINT_SKELETON}]
    images, annotations = [], []
    cells = 2
    cell = size / cells
    for img_id in range(1, num_images + 1):
        bg = rng.integers(0, 120, 3)
        arr = np.clip(bg + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)
        img = Image.fromarray(arr)
        draw = ImageDraw.Draw(img)
        slots = rng.permutation(cells * cells)[: rng.integers(1, cells * cells + 1)]
        for slot in slots:
            r = cell * rng.uniform(0.22, 0.42)
            cx = (slot % cells) * cell + cell / 2 + rng.uniform(-1, 1) * (cell / 2 - r)
            cy = (slot // cells) * cell + cell / 2 + rng.uniform(-1, 1) * (cell / 2 - r)
            color = tuple(int(v) for v in rng.integers(140, 256, 3))
            ann = {"id": len(annotations) + 1, "image_id": img_id, "iscrowd": 0}
            if kind == "instances":
                cat = int(rng.integers(len(INSTANCE_CATEGORIES)))
                poly = _shape_polygon(INSTANCE_CATEGORIES[cat], cx, cy, r, rng.uniform(0, 2 * math.pi))
                ann["category_id"] = cat + 1
            else:
                rx, ry = r * rng.uniform(0.55, 0.9), r
                poly = [(cx, cy - ry), (cx - rx, cy), (cx, cy + ry), (cx + rx, cy)]  # top, left, bottom, right
                top, left, bottom, right = poly
                ann["category_id"] = 1
                ann["keypoints"] = [v for p in (top, left, right, bottom) for v in (round(p[0], 2), round(p[1], 2), 2)]
                ann["num_keypoints"] = 4
            draw.polygon(poly, fill=color)
            xs, ys = [p[0] for p in poly], [p[1] for p in poly]
            x0, y0 = max(0.0, min(xs)), max(0.0, min(ys))
            x1, y1 = min(float(size), max(xs)), min(float(size), max(ys))
            ann.update({"bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                        "area": round(_area(poly), 2),
                        "segmentation": [[round(v, 2) for p in poly for v in p]]})
            annotations.append(ann)
        name = f"{split}_{img_id:05d}.png"
        img.save(out / "images" / name)
        images.append({"id": img_id, "file_name": name, "width": size, "height": size})
    path = out / "annotations.json"
    atomic_write_json(path, {"info": {"description": f"ringnce synthetic scenes ({kind}, {split})"},
                             "images": images, "annotations": annotations, "categories": categories,
                             "licenses": []})
    return path


def ensure_scenes(root: str | Path, size: int = 128, num_train: int = 96, num_val: int = 32) -> dict[str, Path]:
    """Generate the four standard splits once under root; returns {dataset name: folder}."""
    root = Path(root)
    out = {}
    for kind in ("instances", "keypoints"):
        for split, n in (("train", num_train), ("val", num_val)):
            name = f"scenes_{kind}_{split}"
            folder = root / name
            stamp = folder / "annotations.json"
            meta = {"size": size, "n": n}
            if not (stamp.exists() and json.loads(stamp.read_text()).get("info", {}).get("params") == meta):
                generate(folder, kind, split, n, size)
                data = json.loads(stamp.read_text())
                data["info"]["params"] = meta
                atomic_write_json(stamp, data)
            out[name] = folder
    return out


declare(BuiltinSet("scenes_", "RINGNCE_SCENES", "data/scenes", ensure_scenes, "a synthetic-scenes split",
                   keypoints=(KEYPOINT_NAMES, KEYPOINT_FLIP_MAP)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output", default="data/scenes", help="output directory")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--train", type=int, default=96)
    p.add_argument("--val", type=int, default=32)
    args = p.parse_args(argv)
    for name, folder in ensure_scenes(args.output, args.size, args.train, args.val).items():
        print(f"{name}: {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
