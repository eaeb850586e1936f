"""Dataset registry: ``build_dataset(cfg.DATA, split)`` returns a Dataset of (PIL RGB image, label).

Unlabelled images (STL-10 'unlabeled') carry the label -1.
"""
from __future__ import annotations

import numpy as np
from torch.utils.data import Dataset, Subset

from pretrain.common import Registry
from pretrain.data.base import ArrayImageDataset, DatasetError
from pretrain.data.cifar import load_cifar
from pretrain.data.idx import FASHION_CLASSES, FASHION_MNIST_DEFAULT, load_idx
from pretrain.data.imagefolder import ImageFolderDataset
from pretrain.data.stl10 import load_stl10
from pretrain.data.synthetic import SyntheticShapes
from pretrain.data.workers import loader_workers

DATASET_REGISTRY = Registry("DATASET", key="DATA.NAME", doc="""Image datasets (DATA.NAME).

A member is a function ``fn(data_cfg, split) -> Dataset`` (``data_cfg``: the config's DATA node; ``split``:
a split name such as 'train', 'test' or 'train+unlabeled') whose items are ``(PIL RGB image, int label)``,
with ``targets`` (labels, -1 for unlabelled images).  A missing or malformed file raises ``DatasetError``
naming the file and the expected layout.""")


def _root(data_cfg, default: str | None = None) -> str:
    if data_cfg.ROOT:
        return data_cfg.ROOT
    if default:
        return default
    raise DatasetError(f"DATA.ROOT is empty; set it to the folder that holds the {data_cfg.NAME} files.")


@DATASET_REGISTRY.register(name="synthetic")
def _synthetic(data_cfg, split):
    return SyntheticShapes(split, size=data_cfg.SYNTHETIC_SIZE, image_size=data_cfg.IMAGE_SIZE,
                           colors=data_cfg.SYNTHETIC_COLORS)


@DATASET_REGISTRY.register(name="cifar10")
def _cifar10(data_cfg, split):
    return load_cifar("cifar10", _root(data_cfg), split)


@DATASET_REGISTRY.register(name="cifar100")
def _cifar100(data_cfg, split):
    return load_cifar("cifar100", _root(data_cfg), split)


@DATASET_REGISTRY.register(name="stl10")
def _stl10(data_cfg, split):
    return load_stl10(_root(data_cfg), split)


@DATASET_REGISTRY.register(name="imagefolder")
def _imagefolder(data_cfg, split):
    return ImageFolderDataset(_root(data_cfg), split)


@DATASET_REGISTRY.register(name="fashion_mnist")
def _fashion(data_cfg, split):
    return load_idx(_root(data_cfg, FASHION_MNIST_DEFAULT), split, FASHION_CLASSES)


@DATASET_REGISTRY.register(name="mnist")
def _mnist(data_cfg, split):
    return load_idx(_root(data_cfg), split, [str(i) for i in range(10)])


def build_dataset(data_cfg, split: str, limit: int = 0) -> Dataset:
    ds = DATASET_REGISTRY.get(data_cfg.NAME)(data_cfg, split)
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


def labelled_split(cfg) -> str:
    """The labelled part of the training split (STL-10's unlabeled images have no class)."""
    parts = [p for p in cfg.DATA.TRAIN_SPLIT.split("+") if p != "unlabeled"]
    return "+".join(parts) or "train"


__all__ = ["ArrayImageDataset", "DatasetError", "DATASET_REGISTRY", "build_dataset", "labelled_split", "subset", "SyntheticShapes", "ImageFolderDataset", "load_cifar", "load_stl10", "load_idx", "loader_workers"]
