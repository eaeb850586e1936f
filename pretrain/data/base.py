"""Common dataset pieces: in-memory uint8 image arrays, the safe pickle loader, the user-facing error."""
from __future__ import annotations

import io
import pickle

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from pretrain.common import NumpyOnlyUnpickler, UserError


class DatasetError(UserError):
    """A dataset is missing or malformed; the message names the file and the expected layout."""


class ArrayImageDataset(Dataset):
    """Images held as a uint8 array (N, H, W, C) or (N, H, W), possibly memory-mapped; yields (PIL RGB, label)."""

    def __init__(self, images: np.ndarray, targets, classes: list[str] | None = None):
        if len(images) != len(targets):
            raise DatasetError(f"{len(images)} images but {len(targets)} labels.")
        self.images = images
        self.targets = np.asarray(targets, dtype=np.int64)
        self.classes = classes or [str(c) for c in sorted(set(self.targets.tolist()) - {-1})]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        img = Image.fromarray(np.asarray(self.images[i]))
        return img.convert("RGB"), int(self.targets[i])


def load_safe_pickle(path) -> object:
    with open(path, "rb") as f:
        data = f.read()
    try:
        return NumpyOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as e:
        raise DatasetError(f"{path} is truncated or not a CIFAR-style python pickle ({e}); "
                           "download the dataset again.") from None
