"""The tree-crown photos (deepforest 2.1.0's NEON tiles) as a COCO-format detection set."""
import importlib.util
import json

import numpy as np
import pytest
from PIL import Image

from transfer.detection.datasets import trees

needs_wheel = pytest.mark.skipif(importlib.util.find_spec("deepforest") is None,
                                 reason="deepforest==2.1.0 is not installed (make setup installs it with --no-deps)")


def test_a_box_cut_by_the_crop_edge_is_clipped_and_ignored_below_half():
    boxes = [("Tree", 10, 10, 30, 30),      # inside
             ("Tree", 150, 10, 170, 30),    # half inside a 160 crop: kept (>= 0.5)
             ("Dead", 155, 40, 175, 60),    # a quarter inside: ignored (iscrowd)
             ("Tree", 200, 200, 220, 220)]  # outside
    got = trees.crop_boxes(boxes, 0, 0, 160)
    assert [a["bbox"] for a in got] == [[10, 10, 20, 20], [150, 10, 10, 20], [155, 40, 5, 20]]
    assert [a["iscrowd"] for a in got] == [0, 0, 1] and {a["category_id"] for a in got} == {1}
    shifted = trees.crop_boxes(boxes, 160, 0, 160)  # the neighbouring crop sees the other halves
    assert [a["bbox"] for a in shifted] == [[0, 10, 10, 20], [0, 40, 15, 20]]
    assert [a["iscrowd"] for a in shifted] == [0, 0]
    assert [trees.split_of(c) for c in range(8)] == ["train"] * 3 + ["val"] + ["train"] * 3 + ["val"]


def test_missing_wheel_is_one_sentence(tmp_path):
    with pytest.raises(trees.TransferError, match="lacks .*make setup"):
        trees.generate(tmp_path / "out", source=tmp_path)


@needs_wheel
def test_the_crops_match_the_tiles_and_their_voc_boxes(tmp_path):
    folders = trees.ensure_trees(tmp_path)
    src = trees.source_folder()
    voc = {t: trees.read_voc(src / f"{t}.xml") for t in trees.TILES}
    assert sum(map(len, voc.values())) == 951
    assert {b[0] for bs in voc.values() for b in bs} == {"Tree", "Alive", "Dead"}
    data = {s: json.loads((folders[f"trees_{s}"] / "annotations.json").read_text()) for s in trees.SPLITS}
    assert [c["name"] for c in data["train"]["categories"]] == ["tree"]
    assert (len(data["train"]["images"]), len(data["val"]["images"])) == (209, 51)
    for split, d in data.items():
        for img in d["images"]:  # whole crop columns per split; the pixels are the tile's
            assert trees.split_of(img["x0"] // trees.CROP) == split
        img = d["images"][len(d["images"]) // 2]
        with Image.open(src / f"{img['tile']}.png") as tile:
            want = np.asarray(tile.convert("RGB").crop((img["x0"], img["y0"], img["x0"] + 160, img["y0"] + 160)))
        assert np.array_equal(np.asarray(Image.open(folders[f"trees_{split}"] / "images" / img["file_name"])), want)
        for a in d["annotations"]:
            x, y, w, h = a["bbox"]
            assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= 160.01 and y + h <= 160.01
    # crowns wholly inside one crop, and the objects the crop rule kept (those plus crowns >= half inside)
    inside = 0
    for t, boxes in voc.items():
        with Image.open(src / f"{t}.png") as tile:
            width, height = tile.size
        for _, a, b, c, d in boxes:
            col, row = int(a // 160), int(b // 160)
            inside += c <= (col + 1) * 160 <= width and d <= (row + 1) * 160 <= height
    objects = sum(not a["iscrowd"] for d in data.values() for a in d["annotations"])
    assert (inside, objects) == (506, 821)  # the other objects are crowns at least half inside a crop
    assert trees.ensure_trees(tmp_path) == folders  # written once


@needs_wheel
def test_true_boxes_score_ap_100_with_edge_crowns_ignored(tmp_path, monkeypatch):
    """COCO evaluation on trees_val, fed the objects (not the ignored edge crowns): AP 100."""
    import torch
    from detectron2.data import DatasetCatalog
    from detectron2.structures import Boxes, BoxMode, Instances

    from transfer.detection.train_net import Trainer, flatten_results, load_cfg, register_builtin

    monkeypatch.setenv("RINGNCE_TREES", str(tmp_path / "trees"))
    cfg = load_cfg("cpu/trees_faster_rcnn_R_18_FPN.yaml", ["OUTPUT_DIR", str(tmp_path / "out")])
    register_builtin(["trees_val"])
    evaluator = Trainer.build_evaluator(cfg, "trees_val", str(tmp_path / "eval"))
    evaluator.reset()
    crowd = 0
    for d in DatasetCatalog.get("trees_val"):
        anns = [a for a in d["annotations"] if not a.get("iscrowd")]
        crowd += len(d["annotations"]) - len(anns)
        inst = Instances((d["height"], d["width"]))
        inst.pred_boxes = Boxes(torch.tensor([BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)
                                              for a in anns]).reshape(-1, 4))
        inst.scores, inst.pred_classes = torch.ones(len(anns)), torch.zeros(len(anns), dtype=torch.long)
        evaluator.process([{"image_id": d["image_id"]}], [{"instances": inst}])
    metrics = flatten_results(evaluator.evaluate())
    assert crowd > 0 and metrics["bbox/AP"] == pytest.approx(100.0) and metrics["bbox/AP50"] == pytest.approx(100.0)
