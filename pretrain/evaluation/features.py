"""Frozen features: a backbone's features of a dataset, batch by batch, in memory or cached on disk.

``features.npy`` (N, D) float16 and ``labels.npy`` (N,) int64 are written batch by batch into NumPy memory
maps and read back the same way: a probe streams mini-batches from the page cache to its device, so the
process's anonymous memory stays bounded by a batch (plus the epoch's index permutation, 8 bytes an image)
whatever N is.  ImageNet's 1.28M x 2048 features are 5.2 GB on disk in float16 instead of 10.5 GB of RAM.
``InMemoryFeatures`` offers the same interface over tensors (small sets, Meta-Dataset's readout).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm


def encode_batches(backbone: torch.nn.Module, dataset: Dataset, device: torch.device, batch_size: int = 256,
                   num_workers: int = 0, progress: bool = False, desc: str = "features"):
    """Yields (features (b, D) float32 on CPU, labels (b,)) batch by batch, the backbone in eval mode (BN
    frozen; its mode is restored afterwards)."""
    was_training = backbone.training
    backbone.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    try:
        for x, y in tqdm(loader, desc=desc, disable=not progress, leave=False):
            with torch.no_grad():
                f = backbone(x.to(device, non_blocking=True)).float().cpu()
            yield f, torch.as_tensor(y)
    finally:
        backbone.train(was_training)


def extract_features(backbone: torch.nn.Module, dataset: Dataset, device: torch.device, batch_size: int = 256,
                     num_workers: int = 0, progress: bool = False, desc: str = "features"):
    """(features (N, D) float32 on CPU, labels (N,)) held in memory."""
    feats, labels = zip(*encode_batches(backbone, dataset, device, batch_size, num_workers, progress, desc))
    return torch.cat(feats), torch.cat(labels)


class Features:
    """What a linear probe reads: ``features`` (N, D), ``labels`` (N,), ``batch(idx)`` and ``chunks(size)``."""

    features: object
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def dim(self) -> int:
        return self.features.shape[1]


class InMemoryFeatures(Features):
    def __init__(self, features: torch.Tensor, labels: torch.Tensor):
        self.features, self.labels = features, labels

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.features[idx], self.labels[idx]

    def chunks(self, size: int):
        for s in range(0, len(self), size):
            yield self.features[s:s + size], self.labels[s:s + size]


class FeatureCache(Features):
    """Features and labels memory-mapped from ``folder`` (written by ``FeatureCache.write``)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.features = np.load(self.folder / "features.npy", mmap_mode="r")
        self.labels = torch.from_numpy(np.load(self.folder / "labels.npy"))

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows ``idx`` (read in file order), as float32."""
        idx = idx.sort().values
        rows = np.take(self.features, idx.numpy(), axis=0)
        return torch.from_numpy(rows.astype(np.float32)), self.labels[idx]

    def chunks(self, size: int):
        for s in range(0, len(self), size):
            yield torch.from_numpy(np.asarray(self.features[s:s + size], dtype=np.float32)), self.labels[s:s + size]

    @classmethod
    def write(cls, backbone: torch.nn.Module, dataset: Dataset, device, folder: str | Path, batch_size: int = 256,
              num_workers: int = 0, progress: bool = False, desc: str = "features") -> "FeatureCache":
        """Encodes ``dataset`` (items: image tensor, label) with ``encode_batches``, batch by batch
        into ``folder`` (written under a temporary name, then renamed: never a half cache)."""
        folder = Path(folder)
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        feats, labels, row = None, np.empty(len(dataset), dtype=np.int64), 0
        for f, y in encode_batches(backbone, dataset, device, batch_size, num_workers, progress, desc):
            if feats is None:
                feats = np.lib.format.open_memmap(tmp / "features.npy", mode="w+", dtype=np.float16,
                                                  shape=(len(dataset), f.shape[1]))
            feats[row:row + len(f)] = f.numpy().astype(np.float16)
            labels[row:row + len(f)] = y.numpy()
            row += len(f)
        feats.flush()
        del feats
        np.save(tmp / "labels.npy", labels)
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
        return cls(folder)
