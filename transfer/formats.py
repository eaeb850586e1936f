"""Writers of small files in the datasets' real on-disk formats (what the official releases contain), for the
tests and for `ring-suite --smoke`."""
from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image


def write_cifar10(root: Path, n_per_batch: int = 6, seed: int = 0) -> dict:
    """cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}: python-2-style pickles, bytes keys."""
    rng = np.random.default_rng(seed)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    out = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, n_per_batch).tolist()
        with open(d / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": data,
                         b"filenames": [b"x.png"] * n_per_batch}, f, protocol=2)
        out[name] = (data, labels)
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"class{i}".encode() for i in range(10)], b"num_vis": 3072}, f, protocol=2)
    return out


def write_cifar100(root: Path, n: int = 8, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    d = root / "cifar-100-python"
    d.mkdir(parents=True)
    out = {}
    for name in ("train", "test"):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = rng.integers(0, 100, n).tolist()
        with open(d / name, "wb") as f:
            pickle.dump({b"data": data, b"fine_labels": fine, b"coarse_labels": [0] * n}, f, protocol=2)
        out[name] = (data, fine)
    with open(d / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": [f"c{i}".encode() for i in range(100)]}, f, protocol=2)
    return out


def write_stl10(root: Path, n: int = 4, n_unlabeled: int = 3, seed: int = 0) -> dict:
    """stl10_binary/*.bin: uint8 images stored (C, W, H) column-major; labels 1..10 as uint8."""
    rng = np.random.default_rng(seed)
    d = root / "stl10_binary"
    d.mkdir(parents=True)
    out = {}
    for split, count in (("train", n), ("test", n), ("unlabeled", n_unlabeled)):
        hwc = rng.integers(0, 256, (count, 96, 96, 3), dtype=np.uint8)
        hwc.transpose(0, 3, 2, 1).tofile(d / f"{split}_X.bin")
        labels = rng.integers(1, 11, count).astype(np.uint8)
        if split != "unlabeled":
            labels.tofile(d / f"{split}_y.bin")
        out[split] = (hwc, labels)
    (d / "class_names.txt").write_text("\n".join(f"c{i}" for i in range(10)) + "\n")
    return out


def _idx_bytes(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def write_idx(root: Path, n_train: int = 12, n_test: int = 6, gz: bool = True, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        imgs = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n).astype(np.uint8)
        for kind, arr in (("images-idx3-ubyte", imgs), ("labels-idx1-ubyte", labels)):
            name = f"{prefix}-{kind}" + (".gz" if gz else "")
            opener = gzip.open if gz else open
            with opener(root / name, "wb") as f:
                f.write(_idx_bytes(arr))
        out[prefix] = (imgs, labels)
    return out


def write_image_folder(root: Path, classes=("n01440764", "n01443537"), per_class: int = 3, size: int = 20,
                       splits=("train", "val"), seed: int = 0, jpeg: bool = False) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for split in splits:
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                path = root / split / c / f"{c}_{i}.JPEG"
                # ImageNet names; PNG content (lossless, for tests that compare pixels) unless jpeg
                Image.fromarray(arr).save(path, format="JPEG" if jpeg else "PNG")
                out[str(path)] = arr
    return out


def _shapes_image(rng, size: int, n: int):
    """A random background with n filled rectangles: (image array, [(x0, y0, x1, y1)])."""
    arr = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
    boxes = []
    for _ in range(n):
        w, h = rng.integers(size // 4, size // 2, 2)
        x0, y0 = rng.integers(0, size - w), rng.integers(0, size - h)
        arr[y0:y0 + h, x0:x0 + w] = rng.integers(120, 256, 3, dtype=np.uint8)
        boxes.append((int(x0), int(y0), int(x0 + w), int(y0 + h)))
    return arr, boxes


COCO_KEYPOINTS = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
                  "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
                  "right_knee", "left_ankle", "right_ankle"]


def write_coco(root: Path, split: str, categories: list[dict], keypoints: bool = False, n_images: int = 4,
               size: int = 64, seed: int = 0) -> Path:
    """COCO 2017's layout under root: coco/{split}2017/*.jpg and coco/annotations/instances_{split}2017.json
    (or person_keypoints_{split}2017.json: the person category with COCO's 17 keypoints), polygon masks."""
    import json

    rng = np.random.default_rng(seed)
    images_dir, ann_dir = root / "coco" / f"{split}2017", root / "coco" / "annotations"
    images_dir.mkdir(parents=True, exist_ok=True)
    ann_dir.mkdir(parents=True, exist_ok=True)
    cats = [dict(c, keypoints=COCO_KEYPOINTS, skeleton=[[16, 14], [14, 12]]) for c in categories] if keypoints \
        else categories
    images, anns = [], []
    for i in range(n_images):
        arr, boxes = _shapes_image(rng, size, 2)
        name = f"{i:012d}.jpg"
        Image.fromarray(arr).save(images_dir / name, format="JPEG")
        images.append({"id": i + 1, "file_name": name, "width": size, "height": size})
        for x0, y0, x1, y1 in boxes:
            ann = {"id": len(anns) + 1, "image_id": i + 1, "category_id": int(rng.choice([c["id"] for c in cats])),
                   "bbox": [x0, y0, x1 - x0, y1 - y0], "area": float((x1 - x0) * (y1 - y0)), "iscrowd": 0,
                   "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]]}
            if keypoints:
                xs, ys = rng.uniform(x0, x1, 17), rng.uniform(y0, y1, 17)
                ann["keypoints"] = [float(v) for k in range(17) for v in (xs[k], ys[k], 2)]
                ann["num_keypoints"] = 17
            anns.append(ann)
    name = f"person_keypoints_{split}2017.json" if keypoints else f"instances_{split}2017.json"
    path = ann_dir / name
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


VOC_CLASSES = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
               "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor"]


def write_voc(root: Path, year: str, splits: dict[str, int], size: int = 64, seed: int = 0) -> Path:
    """Pascal VOC's layout: VOC{year}/JPEGImages/*.jpg, Annotations/*.xml, ImageSets/Main/{split}.txt."""
    rng = np.random.default_rng(seed)
    base = root / f"VOC{year}"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    for split, n in splits.items():
        ids = [f"{year}_{split}_{i:06d}" for i in range(n)]
        for image_id in ids:
            arr, boxes = _shapes_image(rng, size, 2)
            Image.fromarray(arr).save(base / "JPEGImages" / f"{image_id}.jpg", format="JPEG")
            objects = "".join(
                f"<object><name>{VOC_CLASSES[int(rng.integers(len(VOC_CLASSES)))]}</name><pose>Unspecified</pose>"
                f"<truncated>0</truncated><difficult>0</difficult><bndbox><xmin>{x0 + 1}</xmin><ymin>{y0 + 1}</ymin>"
                f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>" for x0, y0, x1, y1 in boxes)
            (base / "Annotations" / f"{image_id}.xml").write_text(
                f"<annotation><folder>VOC{year}</folder><filename>{image_id}.jpg</filename><size><width>{size}</width>"
                f"<height>{size}</height><depth>3</depth></size><segmented>0</segmented>{objects}</annotation>")
        (base / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return base


# -- weights files in the layouts other projects write (README "Evaluate your own backbone") -------------------
WEIGHT_LAYOUTS = ("torchvision", "safetensors", "moco", "lightning", "vissl", "dino", "detectron2")


def write_weights(sd: dict, path: Path, layout: str) -> Path:
    """A torchvision-named ResNet state dict ``sd`` (classifier included) saved the way ``layout``'s project
    saves it: a bare state dict (.pth), timm's .safetensors, MoCo's .pth.tar (query and key encoders, queue),
    a Lightning .ckpt (solo-learn: backbone, momentum backbone, projector), VISSL (classy_state_dict trunk),
    DINO (teacher and student) or Detectron2's .pkl (NumPy arrays, Detectron2 names)."""
    import torch

    from pretrain.modeling.weight_formats import torchvision_to_detectron2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().clone() for k, v in sd.items()}
    trunk = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    head = {"0.weight": torch.randn(16, 8), "2.weight": torch.randn(8, 16)}
    noisy = {k: v + 0.1 if v.is_floating_point() else v for k, v in trunk.items()}  # a second, different network
    if layout == "torchvision":
        torch.save(sd, path)
    elif layout == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    elif layout == "moco":
        state = {**{f"module.encoder_q.{k}": v for k, v in trunk.items()},
                 **{f"module.encoder_q.fc.{k}": v for k, v in head.items()},
                 **{f"module.encoder_k.{k}": v for k, v in noisy.items()},
                 "module.queue": torch.randn(8, 32), "module.queue_ptr": torch.zeros(1, dtype=torch.long)}
        torch.save({"epoch": 200, "arch": "resnet50", "state_dict": state, "optimizer": {"state": {}, "param_groups": []}},
                   path)
    elif layout == "lightning":
        state = {**{f"backbone.{k}": v for k, v in trunk.items()},
                 **{f"momentum_backbone.{k}": v for k, v in noisy.items()},
                 **{f"projector.{k}": v for k, v in head.items()}}
        torch.save({"epoch": 99, "global_step": 1000, "pytorch-lightning_version": "2.1.0", "state_dict": state,
                    "hyper_parameters": {"method": "byol", "lr": 0.5}}, path)
    elif layout == "vissl":
        torch.save({"classy_state_dict": {"base_model": {"model": {
            "trunk": {f"_feature_blocks.{k}": v for k, v in trunk.items()},
            "heads": {f"0.clf.{k}": v for k, v in head.items()}}}}, "phase_idx": 10}, path)
    elif layout == "dino":
        torch.save({"teacher": {**{f"backbone.{k}": v for k, v in trunk.items()},
                                **{f"head.mlp.{k}": v for k, v in head.items()}},
                    "student": {f"module.backbone.{k}": v for k, v in noisy.items()}, "epoch": 100}, path)
    elif layout == "detectron2":
        model = {torchvision_to_detectron2(k): v.float().numpy() for k, v in trunk.items()
                 if not k.endswith("num_batches_tracked")}
        with open(path, "wb") as f:
            pickle.dump({"model": model, "__author__": "test", "matching_heuristics": True}, f)
    else:
        raise ValueError(f"unknown layout {layout}; layouts: {', '.join(WEIGHT_LAYOUTS)}")
    return path
