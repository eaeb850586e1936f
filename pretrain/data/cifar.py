"""CIFAR-10 / CIFAR-100 from the 'python version' pickle batches."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pretrain.data.base import ArrayImageDataset, DatasetError, load_safe_pickle

_LAYOUTS = {
    # name: (folder, train files, test files, label key, meta file, class-names key)
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                b"labels", "batches.meta", b"label_names"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], b"fine_labels", "meta", b"fine_label_names"),
}


def _find_folder(root: Path, folder: str) -> Path:
    for cand in (root / folder, root):
        if (cand / ("test_batch" if folder.startswith("cifar-10-") else "test")).exists():
            return cand
    return root / folder


def load_cifar(name: str, root: str | Path, split: str) -> ArrayImageDataset:
    folder, train_files, test_files, label_key, meta_file, names_key = _LAYOUTS[name]
    if split not in ("train", "test"):
        raise DatasetError(f"{name} has splits 'train' and 'test', not '{split}'.")
    base = _find_folder(Path(root), folder)
    files = train_files if split == "train" else test_files
    missing = [f for f in files if not (base / f).is_file()]
    if missing:
        raise DatasetError(
            f"{name}: {base / missing[0]} not found; expected the python-version batches "
            f"({', '.join(train_files + test_files)}) in <DATA.ROOT>/{folder}/; set DATA.ROOT to the folder "
            f"that holds {folder}.")
    images, labels = [], []
    for f in files:
        batch = load_safe_pickle(base / f)
        if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
            raise DatasetError(f"{base / f} has no {b'data'!r}/{label_key!r} entries: not a {name} batch file.")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(batch[label_key]):
            raise DatasetError(f"{base / f}: expected N x 3072 uint8 images with N labels, got {data.shape}.")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.extend(batch[label_key])
    classes = None
    if (base / meta_file).is_file():
        meta = load_safe_pickle(base / meta_file)
        if isinstance(meta, dict) and names_key in meta:
            classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta[names_key]]
    return ArrayImageDataset(np.ascontiguousarray(np.concatenate(images)), labels, classes)
