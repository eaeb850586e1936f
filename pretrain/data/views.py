"""Dataset views the loaders read: two augmented views per image (seeded per sample), raw uint8 images or
JPEG bytes for the batched augmentation on the training device, and one transform over a dataset.

The two-view wrapper seeds every sample's randomness from (seed, epoch, index): the views are the same
whatever the worker count, and a resumed run sees exactly the views an uninterrupted run would have seen.
"""
from __future__ import annotations

import random
from typing import Callable, NamedTuple

import torch
from torch.utils.data import Dataset, Subset, default_collate
from torchvision.io import ImageReadMode, decode_jpeg

from pretrain.common import UserError
from pretrain.engine.seeding import derive_seed

NO_VIEW = torch.empty(0)  # the second view of one-view objectives


class TwoViewDataset(Dataset):
    """Yields (view1, view2, index, label); randomness is a pure function of (seed, epoch, index).

    With ``views=1`` (IR, CMC) only one view is augmented; the second place holds an empty tensor, so the
    one view is collated, pinned and copied to the device once."""

    def __init__(self, base: Dataset, transform: Callable, seed: int, views: int = 2):
        self.base, self.transform, self.seed, self.views = base, transform, seed, views
        self.epoch = 0  # set by the engine before each epoch (workers are re-created per epoch)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        img, label = self.base[i]
        s = derive_seed(self.seed, self.epoch, i)
        # fork_rng keeps the main process's global RNG untouched when num_workers == 0.  The transforms draw
        # from the CPU generator only: seeding it alone gives the same views as torch.manual_seed, which also
        # queues the CUDA seeding (a stack trace formatted per call: ~250 us, against ~1.4 ms for a 32-px
        # sample's two views).
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(s)
            state = random.getstate()
            random.seed(s)
            try:
                v1 = self.transform(img)
                v2 = self.transform(img) if self.views == 2 else NO_VIEW
            finally:
                random.setstate(state)
        return v1, v2, i, label


class RawImages(Dataset):
    """(uint8 image (3, H, W), NO_VIEW, index, label) for DATA.AUGMENT_ON device: the loader only decodes;
    the training step augments the whole batch.  Every image must have the same size (it is batched)."""

    def __init__(self, base: Dataset):
        self.base, self.epoch = base, 0

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        from torchvision.transforms.functional import pil_to_tensor

        img, label = self.base[i]
        return pil_to_tensor(img.convert("RGB")), NO_VIEW, i, label


def _encoded_source(ds: Dataset, i: int) -> tuple[Dataset, int]:
    """The dataset holding image files under (possibly nested) subsets, and the item's index there."""
    while isinstance(ds, Subset):
        ds, i = ds.dataset, int(ds.indices[i])
    return ds, i


class EncodedImages(Dataset):
    """(the JPEG file's bytes (uint8, 1-D), NO_VIEW, index, label) for DATA.DECODE_ON device: the loader only
    reads files; the training step decodes (``torchvision.io.decode_jpeg``, nvJPEG on CUDA) and augments the
    whole batch.  Batch with ``collate_encoded``."""

    def __init__(self, base: Dataset, dataset_name: str):
        if not hasattr(_encoded_source(base, 0)[0], "encoded"):
            raise UserError(f"DATA.DECODE_ON device reads JPEG files, which DATA.NAME {dataset_name} does not have "
                            "(imagefolder does); set DATA.DECODE_ON loader.")
        self.base, self.epoch = base, 0

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        ds, j = _encoded_source(self.base, i)
        data, label = ds.encoded(j)
        return data, NO_VIEW, i, label


class EncodedBatch(NamedTuple):
    """A batch of JPEG files as one flat uint8 tensor and each file's length: one shared-memory tensor per
    batch crosses from a loader worker (a list of B small tensors needs one file descriptor each and
    stalled the loader with workers)."""

    data: torch.Tensor
    lengths: torch.Tensor

    def files(self) -> list[torch.Tensor]:
        """Each file's bytes: 1-D views into ``data``."""
        return list(torch.split(self.data, self.lengths.tolist()))


def collate_encoded(batch: list) -> tuple:
    """EncodedImages items -> (an ``EncodedBatch``, then the rest collated as usual)."""
    files = [item[0] for item in batch]
    encoded = EncodedBatch(torch.cat(files), torch.tensor([len(f) for f in files], dtype=torch.long))
    return (encoded, *default_collate([item[1:] for item in batch]))


def decode_batch(batch: EncodedBatch, device) -> list[torch.Tensor]:
    """The batch's JPEGs decoded to RGB uint8 (3, H, W) tensors on ``device`` (nvJPEG on CUDA)."""
    return decode_jpeg(batch.files(), mode=ImageReadMode.RGB, device=device)


class TransformedDataset(Dataset):
    """(transform(image), label) for evaluation."""

    def __init__(self, base: Dataset, transform: Callable):
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        img, label = self.base[i]
        return self.transform(img), label
