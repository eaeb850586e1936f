"""Dataset registry: ``build_dataset(cfg.DATA, split)`` returns a Dataset of (PIL RGB image, label).

Unlabelled images (STL-10 'unlabeled') carry the label -1.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from torch.utils.data import Dataset, Subset

from .base import ArrayImageDataset, DatasetError
from .cifar import load_cifar
from .idx import FASHION_CLASSES, FASHION_MNIST_DEFAULT, load_idx
from .imagefolder import ImageFolderDataset
from .stl10 import load_stl10
from .synthetic import SyntheticShapes

DATASETS: dict[str, Callable[[object, str], Dataset]] = {}


def register_dataset(name: str):
    def deco(fn):
        DATASETS[name] = fn
        return fn
    return deco


def _root(data_cfg, default: str | None = None) -> str:
    if data_cfg.ROOT:
        return data_cfg.ROOT
    if default:
        return default
    raise DatasetError(f"DATA.ROOT is empty; set it to the folder that holds the {data_cfg.NAME} files.")


@register_dataset("synthetic")
def _synthetic(data_cfg, split):
    return SyntheticShapes(split, size=data_cfg.SYNTHETIC_SIZE, image_size=data_cfg.IMAGE_SIZE)


@register_dataset("cifar10")
def _cifar10(data_cfg, split):
    return load_cifar("cifar10", _root(data_cfg), split)


@register_dataset("cifar100")
def _cifar100(data_cfg, split):
    return load_cifar("cifar100", _root(data_cfg), split)


@register_dataset("stl10")
def _stl10(data_cfg, split):
    return load_stl10(_root(data_cfg), split)


@register_dataset("imagefolder")
def _imagefolder(data_cfg, split):
    return ImageFolderDataset(_root(data_cfg), split)


@register_dataset("fashion_mnist")
def _fashion(data_cfg, split):
    return load_idx(_root(data_cfg, FASHION_MNIST_DEFAULT), split, FASHION_CLASSES)


@register_dataset("mnist")
def _mnist(data_cfg, split):
    return load_idx(_root(data_cfg), split, [str(i) for i in range(10)])


def build_dataset(data_cfg, split: str, limit: int = 0) -> Dataset:
    if data_cfg.NAME not in DATASETS:
        raise DatasetError(f"DATA.NAME '{data_cfg.NAME}' is unknown; choose one of: {', '.join(sorted(DATASETS))}.")
    ds = DATASETS[data_cfg.NAME](data_cfg, split)
    return subset(ds, limit) if limit else ds


def subset(ds: Dataset, n: int, seed: int = 0) -> Dataset:
    """A fixed random subset of n items (folder datasets are sorted by class: the first n would be one class)."""
    if n <= 0 or n >= len(ds):
        return ds
    idx = np.sort(np.random.default_rng(seed).permutation(len(ds))[:n])
    sub = Subset(ds, idx.tolist())
    targets = getattr(ds, "targets", None)
    if targets is not None:
        sub.targets = [int(targets[i]) for i in idx]
    return sub


def targets_of(ds: Dataset) -> list[int]:
    t = getattr(ds, "targets", None)
    if t is None:
        raise DatasetError("this dataset exposes no labels (targets).")
    return [int(x) for x in t]


__all__ = ["ArrayImageDataset", "DatasetError", "DATASETS", "build_dataset", "register_dataset", "subset",
           "targets_of", "SyntheticShapes", "ImageFolderDataset", "load_cifar", "load_stl10", "load_idx"]
