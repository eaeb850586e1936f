"""Augmentation pipelines: each step in two forms, a torchvision transform of one PIL image and a batched
form on the training device (``batch_transforms.py``); the dataset views that apply them are in ``views.py``.

Pipelines are chosen by name (``DATA.AUGMENT``); images <= 64 px use the small-image variant (no blur,
which at 32 px erases most of the object).
"""
from __future__ import annotations

import torch
from torchvision import transforms as T

from pretrain.common import Registry, UserError
from pretrain.data import batch_transforms as BA

AUGMENTATION_REGISTRY = Registry("AUGMENTATION", key="DATA.AUGMENT", doc="""Training augmentations (DATA.AUGMENT).

A member is a function ``fn(image_size) -> transform`` taking a PIL RGB image to a normalised tensor
(end the pipeline with ``to_normalized_tensor()``).  The shipped ones are ``Pipeline``s of ``Op``s, which
also have a batch form for ``DATA.AUGMENT_ON device``.""")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SMALL_IMAGE_MAX = 64


def to_normalized_tensor() -> list:
    """The last two transforms of every pipeline: PIL -> tensor, ImageNet mean/std normalisation."""
    return [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


class Op:
    """One augmentation step with two forms: ``pil(size)`` a torchvision transform of one PIL image, and
    ``batch(x, size, g, host)`` the same distribution applied to a batch (N, 3, H, W) in [0, 1] on its
    device (``batch_transforms.py``), drawing per-image values from the generator ``g`` (on that device) and
    per-batch choices from ``host`` (a CPU generator)."""

    def pil(self, size: int):
        raise NotImplementedError

    def batch(self, x: torch.Tensor, size: int, g: torch.Generator, host: torch.Generator) -> torch.Tensor:
        raise NotImplementedError


class Crop(Op):
    def __init__(self, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3)):
        self.scale, self.ratio = scale, ratio

    def pil(self, size):
        return T.RandomResizedCrop(size, scale=self.scale, ratio=self.ratio)

    def batch(self, x, size, g, host):
        if isinstance(x, list):  # decoded JPEGs, one size each
            dev = x[0].device
            h, w = (torch.tensor([img.shape[d] for img in x], device=dev) for d in (1, 2))
            return BA.crop_resize_each(x, BA.crop_boxes(len(x), h, w, self.scale, self.ratio, g, dev), size)
        boxes = BA.crop_boxes(len(x), x.shape[2], x.shape[3], self.scale, self.ratio, g, x.device)
        return BA.crop_resize(x, boxes, size)


class Jitter(Op):
    KINDS = ("brightness", "contrast", "saturation", "hue")

    def __init__(self, brightness, contrast, saturation, hue, p=1.0):
        self.strength, self.p = (brightness, contrast, saturation, hue), p

    def pil(self, size):
        jitter = T.ColorJitter(*self.strength)
        return jitter if self.p >= 1 else T.RandomApply([jitter], p=self.p)

    def batch(self, x, size, g, host):
        n, dev = len(x), x.device
        apply = torch.rand(n, generator=g, device=dev) < self.p
        factors = [BA.uniform(g, n, -s, s, dev) if k == "hue" else BA.uniform(g, n, max(0.0, 1 - s), 1 + s, dev)
                   for k, s in zip(self.KINDS, self.strength)]
        y = x
        for i in torch.randperm(4, generator=host).tolist():  # one order per batch, drawn on the host
            if self.strength[i]:
                y = BA.adjust(y, self.KINDS[i], factors[i])
        return BA.where(apply, y, x)


class Gray(Op):
    def __init__(self, p):
        self.p = p

    def pil(self, size):
        return T.RandomGrayscale(p=self.p)

    def batch(self, x, size, g, host):
        return BA.where(torch.rand(len(x), generator=g, device=x.device) < self.p, BA.gray(x).expand_as(x), x)


class Blur(Op):
    """MoCo v2's Gaussian blur (kernel ~10 % of the image, sigma 0.1-2.0); only above SMALL_IMAGE_MAX px."""

    def __init__(self, p):
        self.p = p

    def pil(self, size):
        return T.RandomApply([T.GaussianBlur(kernel_size=2 * (size // 20) + 1, sigma=(0.1, 2.0))], p=self.p)

    def batch(self, x, size, g, host):
        n, dev = len(x), x.device
        apply = torch.rand(n, generator=g, device=dev) < self.p
        return BA.where(apply, BA.gaussian_blur(x, 2 * (size // 20) + 1, BA.uniform(g, n, 0.1, 2.0, dev)), x)


class Flip(Op):
    def pil(self, size):
        return T.RandomHorizontalFlip()

    def batch(self, x, size, g, host):
        return BA.where(torch.rand(len(x), generator=g, device=x.device) < 0.5, x.flip(-1), x)


class Pipeline:
    """A named list of ops: called with an image size it is the PIL transform (ending in a normalised
    tensor); ``batch_form(size)`` is the same pipeline for batches on the device."""

    def __init__(self, ops_for_size, doc: str):
        self.ops_for_size, self.__doc__ = ops_for_size, doc

    def __call__(self, size: int) -> T.Compose:
        return T.Compose([op.pil(size) for op in self.ops_for_size(size)] + to_normalized_tensor())

    def batch_form(self, size: int) -> "BatchPipeline":
        return BatchPipeline(self.ops_for_size(size), size)


class BatchPipeline:
    """uint8 images (N, 3, H, W) of one size, or a list of N (3, H_i, W_i) (decoded JPEGs) -> normalised
    augmented views (N, 3, size, size)."""

    def __init__(self, ops: list, size: int):
        self.ops, self.size = ops, size

    def __call__(self, images: torch.Tensor | list, seed: int) -> torch.Tensor:
        """Every random draw from ``seed``: on the images' device, and the jitter order on the host."""
        if isinstance(images, list):
            if not self.ops or not isinstance(self.ops[0], Crop):
                raise UserError("DATA.DECODE_ON device needs an augmentation that starts with a crop (images of "
                                "different sizes are batched by cropping them); set DATA.DECODE_ON loader.")
            x, dev = [img.float() / 255.0 for img in images], images[0].device
        else:
            x, dev = images.float() / 255.0, images.device
        g = torch.Generator(device=dev).manual_seed(seed)
        host = torch.Generator().manual_seed(seed)
        if not any(isinstance(op, Crop) for op in self.ops) and x.shape[-1] != self.size:
            x = BA.resize(x, self.size)
        for op in self.ops:
            x = op.batch(x, self.size, g, host)
        mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std


def _register(name: str, doc: str):
    def wrap(ops_for_size):
        AUGMENTATION_REGISTRY.register(Pipeline(ops_for_size, doc), name=name)
        return ops_for_size
    return wrap


@_register("ir", "Instance-discrimination style (the paper's code): crop 0.2-1, grayscale 0.2, jitter 0.4, flip.")
def ir_ops(size: int) -> list:
    return [Crop((0.2, 1.0)), Gray(0.2), Jitter(0.4, 0.4, 0.4, 0.4), Flip()]


@_register("mocov2", "MoCo v2: jitter (0.4, 0.4, 0.4, 0.1) with p 0.8, grayscale 0.2, blur p 0.5 (large images "
                     "only), flip.")
def mocov2_ops(size: int) -> list:
    return [Crop((0.2, 1.0)), Jitter(0.4, 0.4, 0.4, 0.1, p=0.8), Gray(0.2),
            *([Blur(0.5)] if size > SMALL_IMAGE_MAX else []), Flip()]


@_register("cmc", "CMC on Lab: crop and flip only (grayscale or jitter would corrupt the ab view's signal).")
def cmc_ops(size: int) -> list:
    return [Crop((0.2, 1.0)), Flip()]


def eval_transform(size: int) -> T.Compose:
    """Deterministic: resize (1.14x then centre crop for large images, plain resize for small ones)."""
    if size > SMALL_IMAGE_MAX:
        return T.Compose([T.Resize(int(round(size * 256 / 224))), T.CenterCrop(size), *to_normalized_tensor()])
    return T.Compose([T.Resize((size, size)), *to_normalized_tensor()])


def build_train_transform(name: str, size: int) -> T.Compose:
    return AUGMENTATION_REGISTRY.get(name)(size)


def build_batch_augment(name: str, size: int) -> "BatchPipeline":
    pipeline = AUGMENTATION_REGISTRY.get(name)
    if not isinstance(pipeline, Pipeline):
        raise UserError(f"DATA.AUGMENT {name} has no batch form for DATA.AUGMENT_ON device (register it as a "
                        "Pipeline of Ops in pretrain/data/transforms.py), or set DATA.AUGMENT_ON loader.")
    return pipeline.batch_form(size)
