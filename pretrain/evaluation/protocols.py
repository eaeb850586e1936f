"""Linear-evaluation protocols by name (``LINCLS.PROTOCOL``), each one recipe: which images the linear
layer sees, its optimizer and its learning-rate schedule.  The encoder is always frozen with BatchNorm in
eval mode; ``LINCLS.EPOCHS`` and ``LINCLS.BATCH_SIZE`` set the length of every protocol.

- ``paper``: the authors' code: one linear layer, SGD lr 0.01, momentum 0.9, weight decay 1e-5, no
  schedule, trained on the *pretraining augmentations* (``DATA.AUGMENT``) passed through the encoder
  every epoch.  One difference, on purpose: their encoder's BatchNorm drifts in train mode (a side effect
  of their framework); here it is frozen.
- ``moco``: MoCo's main_lincls: the layer initialised N(0, 0.01) with zero bias, lr 30, momentum 0.9,
  weight decay 0, lr x0.1 at 60 % and 80 % of training; RandomResizedCrop(size) + flip for training, every
  image of every epoch (no drop_last), Resize(round(size * 256 / 224)) + CenterCrop(size) for testing
  (224 px: Resize 256 + CenterCrop 224); the test split scored after every epoch, and both the last
  epoch's top-1 (``top1``) and the best epoch's (``top1_best``, ``best_epoch``) reported, as MoCo's code
  reports its best.  The best is chosen on the test split itself: an optimistic number, labelled so.
- ``cached``: the fast protocol: un-augmented images are encoded once, the features cached, and the layer
  trains on them with LINCLS.LR / MOMENTUM / WEIGHT_DECAY / SCHEDULE / STEPS (defaults: lr 0.01,
  momentum 0.9, wd 1e-5, lr x0.1 at 60 % and 80 %).  A different number from the other two: tables say so.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torchvision import transforms as T

from pretrain.data.transforms import build_train_transform, eval_transform, to_normalized_tensor
from pretrain.common import Registry

LINCLS_PROTOCOL_REGISTRY = Registry("LINCLS_PROTOCOL", key="LINCLS.PROTOCOL", doc="""Linear-evaluation protocols.

A member is a builder ``fn(cfg) -> Protocol``: the optimizer's lr, momentum and weight decay, the learning-
rate schedule (``SOLVER``-style name and step fractions), the training and test transforms, and whether
the features are computed once and cached (``cached``) or the training images go through the frozen
encoder every epoch.""")


@dataclass(frozen=True)
class Protocol:
    name: str
    lr: float
    momentum: float
    weight_decay: float
    schedule: str  # an LR_SCHEDULE_REGISTRY name
    steps: tuple  # fractions of training where the step schedule multiplies the lr by 0.1
    train_transform: Callable
    test_transform: Callable
    cached: bool
    init_std: float | None = None  # the layer's weights N(0, init_std) and zero bias; None: PyTorch's default
    drop_last: bool = True  # an epoch's last, partial batch left out
    best_epoch: bool = False  # score the test split after every epoch and report the best epoch besides the last


def moco_test_transform(size: int) -> T.Compose:
    return T.Compose([T.Resize(int(round(size * 256 / 224))), T.CenterCrop(size), *to_normalized_tensor()])


def moco_train_transform(size: int) -> T.Compose:
    return T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), *to_normalized_tensor()])


@LINCLS_PROTOCOL_REGISTRY.register(name="paper")
def paper(cfg) -> Protocol:
    size = cfg.DATA.IMAGE_SIZE
    return Protocol("paper", 0.01, 0.9, 1e-5, "step", (), build_train_transform(cfg.DATA.AUGMENT, size),
                    eval_transform(size), cached=False)


@LINCLS_PROTOCOL_REGISTRY.register(name="moco")
def moco(cfg) -> Protocol:
    size = cfg.DATA.IMAGE_SIZE
    return Protocol("moco", 30.0, 0.9, 0.0, "step", (0.6, 0.8), moco_train_transform(size),
                    moco_test_transform(size), cached=False, init_std=0.01, drop_last=False, best_epoch=True)


@LINCLS_PROTOCOL_REGISTRY.register(name="cached")
def cached(cfg) -> Protocol:
    L, size = cfg.LINCLS, cfg.DATA.IMAGE_SIZE
    return Protocol("cached", L.LR, L.MOMENTUM, L.WEIGHT_DECAY, L.SCHEDULE, tuple(L.STEPS), eval_transform(size),
                    eval_transform(size), cached=True)


def build_protocol(cfg) -> Protocol:
    return LINCLS_PROTOCOL_REGISTRY.get(cfg.LINCLS.PROTOCOL)(cfg)
