"""ImageNet-style folders: <root>/<split>/<class>/<image> (e.g. train/n01440764/*.JPEG)."""
from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset
from torchvision.io import read_file

from pretrain.data.base import DatasetError

_SPLIT_ALIASES = {"test": ("val", "test"), "val": ("val", "test"), "train": ("train",)}


class ImageFolderDataset(Dataset):
    def __init__(self, root: str | Path, split: str):
        root = Path(root)
        folder = next((root / s for s in _SPLIT_ALIASES.get(split, (split,)) if (root / s).is_dir()), None)
        if folder is None:
            raise DatasetError(f"image folder {root / split} not found; expected <DATA.ROOT>/{split}/<class>/<image> "
                               "(ImageNet layout: train/n01440764/*.JPEG, val/n01440764/*.JPEG); set DATA.ROOT.")
        try:
            self.classes, class_to_idx = find_classes(str(folder))
            self.samples = make_dataset(str(folder), class_to_idx, extensions=IMG_EXTENSIONS)
        except (FileNotFoundError, RuntimeError) as e:
            raise DatasetError(f"{folder}: no class folders with images ({e}); expected {folder}/<class>/<image>.") \
                from None
        self.targets = [t for _, t in self.samples]
        self.root = folder

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, target = self.samples[i]
        try:
            with Image.open(path) as img:
                return img.convert("RGB"), target
        except (UnidentifiedImageError, OSError) as e:
            raise DatasetError(f"{path} is not a readable image ({e}); delete or replace it.") from None

    def encoded(self, i: int) -> tuple[torch.Tensor, int]:
        """(the file's bytes as a uint8 tensor, label), for decoding on the training device
        (``DATA.DECODE_ON device``): JPEG files only."""
        path, target = self.samples[i]
        data = read_file(path)
        if len(data) < 3 or data[:3].tolist() != [0xFF, 0xD8, 0xFF]:
            raise DatasetError(f"{path} is not a JPEG, and DATA.DECODE_ON device decodes JPEGs only; convert it "
                               "to JPEG or set DATA.DECODE_ON loader.")
        return data, target
