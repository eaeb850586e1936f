"""Common dataset pieces: in-memory uint8 image arrays, a safe pickle loader, the user-facing error."""
from __future__ import annotations

import io
import pickle

import numpy as np
from PIL import Image
from torch.utils.data import Dataset


class DatasetError(RuntimeError):
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


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and NumPy arrays only: a dataset file cannot run code on load."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"), ("copy_reg", "_reconstructor"), ("copyreg", "_reconstructor"),
        ("__builtin__", "object"), ("builtins", "object"), ("_codecs", "encode"),
        ("numpy._core.numeric", "_frombuffer"), ("numpy.core.numeric", "_frombuffer"),  # pickle protocol 5
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a dataset pickle")


def load_safe_pickle(path) -> object:
    with open(path, "rb") as f:
        data = f.read()
    try:
        return _NumpyOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as e:
        raise DatasetError(f"{path} is truncated or not a CIFAR-style python pickle ({e}); "
                           "download the dataset again.") from None
