"""STL-10 from the binary release (stl10_binary/*.bin), unlabeled split memory-mapped."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pretrain.data.base import ArrayImageDataset, DatasetError

_IMG_BYTES = 3 * 96 * 96
_SPLITS = {"train": ("train_X.bin", "train_y.bin"), "test": ("test_X.bin", "test_y.bin"),
           "unlabeled": ("unlabeled_X.bin", None)}


def _read_images(path: Path) -> np.ndarray:
    size = path.stat().st_size
    if size == 0 or size % _IMG_BYTES:
        raise DatasetError(f"{path} is {size} bytes, not a multiple of {_IMG_BYTES} (3x96x96): the file is "
                           "truncated; download stl10_binary again.")
    raw = np.memmap(path, dtype=np.uint8, mode="r", shape=(size // _IMG_BYTES, 3, 96, 96))
    # The release stores each image channel-major and column-major (C, W, H).
    return raw.transpose(0, 3, 2, 1)


def _load_split(base: Path, split: str):
    xname, yname = _SPLITS[split]
    x_path = base / xname
    if not x_path.is_file():
        raise DatasetError(f"stl10: {x_path} not found; expected the binary release (train_X.bin, train_y.bin, "
                           "test_X.bin, test_y.bin, unlabeled_X.bin) in <DATA.ROOT>/stl10_binary/; set DATA.ROOT "
                           "to the folder that holds stl10_binary.")
    images = _read_images(x_path)
    if yname is None:
        return images, np.full(len(images), -1, dtype=np.int64)
    y_path = base / yname
    if not y_path.is_file():
        raise DatasetError(f"stl10: {y_path} not found (labels for {xname}).")
    labels = np.fromfile(y_path, dtype=np.uint8).astype(np.int64) - 1  # stored as 1..10
    if len(labels) != len(images):
        raise DatasetError(f"{y_path} has {len(labels)} labels for {len(images)} images in {x_path}: "
                           "one of them is truncated.")
    return images, labels


def load_stl10(root: str | Path, split: str) -> ArrayImageDataset:
    root = Path(root)
    base = root / "stl10_binary" if (root / "stl10_binary").is_dir() else root
    parts = split.split("+")
    bad = [p for p in parts if p not in _SPLITS]
    if bad:
        raise DatasetError(f"stl10 has splits train, test, unlabeled (or 'train+unlabeled'), not '{split}'.")
    loaded = [_load_split(base, p) for p in parts]
    classes = None
    if (base / "class_names.txt").is_file():
        classes = (base / "class_names.txt").read_text().split()
    if len(loaded) == 1:
        return ArrayImageDataset(loaded[0][0], loaded[0][1], classes)
    return _ConcatArrays(loaded, classes)


class _ConcatArrays(ArrayImageDataset):
    """train+unlabeled without copying the 2.7 GB unlabeled memmap."""

    def __init__(self, parts, classes):
        self._parts = parts
        self._offsets = np.cumsum([0] + [len(p[0]) for p in parts])
        targets = np.concatenate([p[1] for p in parts])
        super().__init__(np.empty((len(targets), 0), dtype=np.uint8), targets, classes)

    def __getitem__(self, i: int):
        from PIL import Image

        j = int(np.searchsorted(self._offsets, i, side="right") - 1)
        img = np.asarray(self._parts[j][0][i - self._offsets[j]])
        return Image.fromarray(img).convert("RGB"), int(self.targets[i])
