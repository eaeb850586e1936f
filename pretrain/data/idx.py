"""MNIST / Fashion-MNIST IDX files (optionally gzipped), e.g. Debian's dataset-fashion-mnist."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from pretrain.data.base import ArrayImageDataset, DatasetError

FASHION_MNIST_DEFAULT = "/usr/share/datasets/fashion-mnist"
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                   "Bag", "Ankle boot"]
_PREFIX = {"train": "train", "test": "t10k"}


def read_idx(path: Path) -> np.ndarray:
    """Reads an IDX file: big-endian magic (0, 0, dtype code, ndim), ndim uint32 sizes, then the data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DatasetError(f"{path} cannot be read ({e}): the file is truncated or corrupt; download it again.") \
            from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DatasetError(f"{path} is not an unsigned-byte IDX file (bad magic number).")
    ndim = data[3]
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", data[4:header])
    n = int(np.prod(dims))
    if len(data) - header != n:
        raise DatasetError(f"{path} holds {len(data) - header} data bytes but its header says {dims} "
                           f"({n} bytes): the file is truncated; download it again.")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _find(root: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx")):
        if (root / name).is_file():
            return root / name
    raise DatasetError(f"{root / stem}[.gz] not found; expected the IDX files train-images-idx3-ubyte, "
                       "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (optionally .gz) "
                       f"in {root}; set DATA.ROOT to their folder (Debian: apt-get install dataset-fashion-mnist "
                       f"puts them in {FASHION_MNIST_DEFAULT}).")


def load_idx(root: str | Path, split: str, classes: list[str] | None = None) -> ArrayImageDataset:
    if split not in _PREFIX:
        raise DatasetError(f"IDX datasets have splits 'train' and 'test', not '{split}'.")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"IDX dataset folder {root} does not exist; set DATA.ROOT to the folder holding "
                           f"train-images-idx3-ubyte(.gz) and friends (Fashion-MNIST: {FASHION_MNIST_DEFAULT}).")
    images = read_idx(_find(root, f"{_PREFIX[split]}-images-idx3-ubyte"))
    labels = read_idx(_find(root, f"{_PREFIX[split]}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DatasetError(f"{root}: {split} images {images.shape} and labels {labels.shape} do not match.")
    return ArrayImageDataset(images, labels.astype(np.int64), classes)
