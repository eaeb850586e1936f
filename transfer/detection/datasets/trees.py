"""Real aerial photographs: tree crowns in the four annotated RGB tiles that the deepforest wheel ships.

deepforest 2.1.0 (MIT licence, PyPI; ``make setup`` installs it with ``--no-deps``: its module is never
imported, only its ``data/`` folder is read) carries four NEON airborne RGB tiles (10 cm per pixel) with
Pascal-VOC box annotations, 951 crowns in all:

    2019_YELL_2_528000_4978000_image_crop2  2299 x 2472  574 Tree
    2019_YELL_2_541000_4977000_image_crop   1249 x 1035  279 Tree
    OSBS_029                                 400 x  400   61 Tree
    SOAP_061                                 400 x  400    9 Alive, 28 Dead

They become a class-agnostic COCO-format detection set (one category, ``tree``; a dead tree is a tree) of
fixed CROP x CROP crops on each tile's grid (the strip right of / below the last whole crop is unused):
- split: whole crop columns, every fourth column (index 3, 7, 11, ...) is ``trees_val``, the rest
  ``trees_train``; the 400-px tiles have two columns, so they are training images only;
- a box is clipped to the crop; when at least half of its area is inside it is an object, when less it is
  kept as ``iscrowd`` (ignored by training and by COCO evaluation: a crown cut by the crop's edge is
  neither a miss nor a false positive).

    python -m transfer.detection.datasets.trees -o data/trees      # writes trees_{train,val}/{images,annotations.json}
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from PIL import Image

from pretrain.io import atomic_path, atomic_write_json
from transfer.detection import TransferError
from transfer.detection.builtin_sets import BuiltinSet, declare

TILES = ("2019_YELL_2_528000_4978000_image_crop2", "2019_YELL_2_541000_4977000_image_crop", "OSBS_029", "SOAP_061")
CROP = 160
VAL_EVERY = 4  # crop column c is validation when c % VAL_EVERY == VAL_EVERY - 1
MIN_VISIBLE = 0.5
SPLITS = ("train", "val")
PACKAGE = "deepforest==2.1.0"


def source_folder(root: str | Path | None = None) -> Path:
    """deepforest's data folder, found without importing the package (it needs GDAL, Lightning, ...)."""
    if root is not None:
        return Path(root)
    spec = importlib.util.find_spec("deepforest")
    if spec is None or not spec.submodule_search_locations:
        raise TransferError(f"the tree-crown photos come from the {PACKAGE} wheel, which is not installed; run "
                            f"make setup (or pip install --no-deps {PACKAGE}).")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def read_voc(xml_path: Path) -> list[tuple[str, float, float, float, float]]:
    """(label, xmin, ymin, xmax, ymax) of every object in a Pascal-VOC annotation file."""
    boxes = []
    for obj in ET.parse(xml_path).getroot().iter("object"):
        b = obj.find("bndbox")
        boxes.append((obj.findtext("name"), *(float(b.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))))
    return boxes


def crop_boxes(boxes, x0: int, y0: int, size: int) -> list[dict]:
    """The boxes as seen in the crop [x0, x0+size) x [y0, y0+size): COCO xywh, clipped; iscrowd when less than
    MIN_VISIBLE of the box is inside."""
    out = []
    for _, a, b, c, d in boxes:
        ca, cb, cc, cd = max(a, x0), max(b, y0), min(c, x0 + size), min(d, y0 + size)
        if cc <= ca or cd <= cb:
            continue
        visible = (cc - ca) * (cd - cb) / max((c - a) * (d - b), 1e-9)
        w, h = round(cc - ca, 2), round(cd - cb, 2)
        out.append({"bbox": [round(ca - x0, 2), round(cb - y0, 2), w, h], "area": round(w * h, 2),
                    "iscrowd": int(visible < MIN_VISIBLE), "category_id": 1})
    return out


def split_of(column: int) -> str:
    return "val" if column % VAL_EVERY == VAL_EVERY - 1 else "train"


def generate(out_root: str | Path, source: str | Path | None = None, crop: int = CROP) -> dict[str, Path]:
    """Writes <out_root>/trees_{train,val}/{images/*.png, annotations.json}; returns {dataset name: folder}."""
    src = source_folder(source)
    missing = [t for t in TILES for ext in (".png", ".xml") if not (src / f"{t}{ext}").is_file()]
    if missing:
        raise TransferError(f"{src} lacks {missing[0]} (.png/.xml); reinstall {PACKAGE} with make setup.")
    out = Path(out_root)
    data = {s: {"images": [], "annotations": []} for s in SPLITS}
    for s in SPLITS:
        (out / f"trees_{s}" / "images").mkdir(parents=True, exist_ok=True)
    for tile in TILES:
        boxes = read_voc(src / f"{tile}.xml")
        with Image.open(src / f"{tile}.png") as im:
            image = im.convert("RGB")
        for row in range(image.height // crop):
            for col in range(image.width // crop):
                split = split_of(col)
                d = data[split]
                x0, y0 = col * crop, row * crop
                name = f"{tile}_r{row:02d}_c{col:02d}.png"
                with atomic_path(out / f"trees_{split}" / "images" / name) as tmp:
                    image.crop((x0, y0, x0 + crop, y0 + crop)).save(tmp, format="PNG")
                img_id = len(d["images"]) + 1
                d["images"].append({"id": img_id, "file_name": name, "width": crop, "height": crop, "tile": tile,
                                    "x0": x0, "y0": y0})
                for ann in crop_boxes(boxes, x0, y0, crop):
                    d["annotations"].append({"id": len(d["annotations"]) + 1, "image_id": img_id, **ann})
    folders = {}
    for s in SPLITS:
        folder = out / f"trees_{s}"
        atomic_write_json(folder / "annotations.json", {
            "info": {"description": f"deepforest 2.1.0 NEON tiles, {crop}-px crops ({s})",
                     "params": {"crop": crop, "val_every": VAL_EVERY, "min_visible": MIN_VISIBLE}},
            "images": data[s]["images"], "annotations": data[s]["annotations"],
            "categories": [{"id": 1, "name": "tree", "supercategory": "plant"}], "licenses": []})
        folders[f"trees_{s}"] = folder
    return folders


def ensure_trees(root: str | Path, crop: int = CROP) -> dict[str, Path]:
    """The two splits under root, written once (again when the crop rule changed)."""
    root = Path(root)
    params = {"crop": crop, "val_every": VAL_EVERY, "min_visible": MIN_VISIBLE}
    stamps = [root / f"trees_{s}" / "annotations.json" for s in SPLITS]
    if all(p.exists() and json.loads(p.read_text()).get("info", {}).get("params") == params for p in stamps):
        return {f"trees_{s}": root / f"trees_{s}" for s in SPLITS}
    return generate(root, crop=crop)


declare(BuiltinSet("trees_", "RINGNCE_TREES", "data/trees", ensure_trees, "a tree-crown photo split"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output", default="data/trees", help="output directory")
    p.add_argument("--crop", type=int, default=CROP)
    args = p.parse_args(argv)
    for name, folder in ensure_trees(args.output, args.crop).items():
        data = json.loads((folder / "annotations.json").read_text())
        objects = sum(1 for a in data["annotations"] if not a["iscrowd"])
        print(f"{name}: {len(data['images'])} images, {objects} trees (+{len(data['annotations']) - objects} "
              f"ignored at crop edges) -> {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
