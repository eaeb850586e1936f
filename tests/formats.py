"""Writers of small files in the datasets' real on-disk formats (what the official releases contain)."""
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
                       splits=("train", "val"), seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for split in splits:
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                path = root / split / c / f"{c}_{i}.JPEG"
                Image.fromarray(arr).save(path, format="PNG")  # ImageNet names, lossless content
                out[str(path)] = arr
    return out
