"""Augmentation pipelines (torchvision transforms) and the two-view dataset wrapper.

Pipelines are chosen by name (``DATA.AUGMENT``); images <= 64 px use the small-image variant (no blur,
which at 32 px erases most of the object).  The two-view wrapper seeds every sample's randomness from
(seed, epoch, index): the views are the same whatever the worker count, and a resumed run sees exactly
the views an uninterrupted run would have seen.
"""
from __future__ import annotations

import random

import torch
from torch.utils.data import Dataset
from torchvision import transforms as T

from .common import Registry
from .seeding import derive_seed

AUGMENTATION_REGISTRY = Registry("AUGMENTATION", key="DATA.AUGMENT", doc="""Training augmentations (DATA.AUGMENT).

A member is a function ``fn(image_size) -> transform`` taking a PIL RGB image to a normalised tensor
(end the pipeline with ``to_normalized_tensor()``).""")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SMALL_IMAGE_MAX = 64


def to_normalized_tensor() -> list:
    """The last two transforms of every pipeline: PIL -> tensor, ImageNet mean/std normalisation."""
    return [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


@AUGMENTATION_REGISTRY.register(name="ir")
def ir_transform(size: int) -> T.Compose:
    """Instance-discrimination style (the paper's code): crop 0.2-1, grayscale 0.2, jitter 0.4, flip."""
    return T.Compose([
        T.RandomResizedCrop(size, scale=(0.2, 1.0)),
        T.RandomGrayscale(p=0.2),
        T.ColorJitter(0.4, 0.4, 0.4, 0.4),
        T.RandomHorizontalFlip(),
        *to_normalized_tensor(),
    ])


@AUGMENTATION_REGISTRY.register(name="mocov2")
def mocov2_transform(size: int) -> T.Compose:
    """MoCo v2: jitter (0.4, 0.4, 0.4, 0.1) with p 0.8, grayscale 0.2, blur p 0.5 (large images only), flip."""
    ops = [
        T.RandomResizedCrop(size, scale=(0.2, 1.0)),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        T.RandomGrayscale(p=0.2),
    ]
    if size > SMALL_IMAGE_MAX:
        ops.append(T.RandomApply([T.GaussianBlur(kernel_size=2 * (size // 20) + 1, sigma=(0.1, 2.0))], p=0.5))
    ops += [T.RandomHorizontalFlip(), *to_normalized_tensor()]
    return T.Compose(ops)


@AUGMENTATION_REGISTRY.register(name="shapes")
def shapes_transform(size: int) -> T.Compose:
    """For the built-in procedural shapes: crops that keep most of the object (scale 0.5-1) and colour
    distortion on every view with the hue turned anywhere on the circle.  Every synthetic image has its own
    random colours, and MoCo v2's crops (down to 20 %) often show two views of background only: with those,
    the pair of colours is the one cue two views share, and pretraining learns colour instead of shape."""
    return T.Compose([
        T.RandomResizedCrop(size, scale=(0.5, 1.0)),
        T.ColorJitter(0.6, 0.6, 0.6, 0.5),
        T.RandomGrayscale(p=0.2),
        T.RandomHorizontalFlip(),
        *to_normalized_tensor(),
    ])


@AUGMENTATION_REGISTRY.register(name="cmc")
def cmc_transform(size: int) -> T.Compose:
    """CMC on Lab: crop and flip only (grayscale or jitter would corrupt the ab view's signal)."""
    return T.Compose([T.RandomResizedCrop(size, scale=(0.2, 1.0)), T.RandomHorizontalFlip(), *to_normalized_tensor()])


def eval_transform(size: int) -> T.Compose:
    """Deterministic: resize (1.14x then centre crop for large images, plain resize for small ones)."""
    if size > SMALL_IMAGE_MAX:
        return T.Compose([T.Resize(int(round(size * 256 / 224))), T.CenterCrop(size), *to_normalized_tensor()])
    return T.Compose([T.Resize((size, size)), *to_normalized_tensor()])


def build_train_transform(name: str, size: int) -> T.Compose:
    return AUGMENTATION_REGISTRY.get(name)(size)


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
        # fork_rng keeps the main process's global RNG untouched when num_workers == 0.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s)
            state = random.getstate()
            random.seed(s)
            try:
                v1 = self.transform(img)
                v2 = self.transform(img) if self.views == 2 else NO_VIEW
            finally:
                random.setstate(state)
        return v1, v2, i, label


class TransformedDataset(Dataset):
    """(transform(image), label) for evaluation."""

    def __init__(self, base: Dataset, transform: Callable):
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        img, label = self.base[i]
        return self.transform(img), label
