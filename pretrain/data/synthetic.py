"""A procedural labelled image dataset that needs no files: the built-in data of demos and tests.

Each class is a shape family (disc, square, triangle, cross, ring, stripes, ...); every image draws one
instance with random position, scale, rotation, colours and background noise, deterministically from
(seed, split, index).  Colour carries no label information, so augmentation-invariant features must
encode shape, as on natural images.

Colours (``colors``): ``random`` draws the background and the shape's colour from all of RGB;
``palette`` draws them from four fixed colours (two different ones).  With random colours each image's
colour pair is nearly unique and survives MoCo v2's jitter (hue +-0.1), so a short instance-discrimination
run tells images apart by colour and learns little shape (measured: below a random-init backbone's linear
accuracy).  With the palette, colour still varies between images (a nuisance an untrained backbone
responds to) but only 12 pairs exist, so telling 4,096 images apart takes their shape and pose.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

from pretrain.data.base import DatasetError
from pretrain.engine.seeding import derive_seed

PALETTE = [(230, 60, 50), (40, 160, 70), (50, 80, 220), (235, 200, 40)]  # red, green, blue, yellow
COLOR_MODES = ("random", "palette")
CLASSES = ["disc", "square", "triangle", "cross", "ring", "h-stripes", "v-stripes", "checker", "diamond", "star"]
_SPLIT_IDS = {"train": 0, "test": 1, "val": 1}


def _polygon(cx, cy, r, n, rot, inner=None):
    pts = []
    for k in range(n * (2 if inner else 1)):
        rad = (inner if inner and k % 2 else 1.0) * r
        a = rot + math.pi * 2 * k / (n * (2 if inner else 1))
        pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
    return pts


def _colours(rng: np.random.Generator, colors: str) -> tuple[tuple, tuple]:
    """(background, foreground) RGB, at least 150 apart (summed over channels)."""
    if colors == "palette":
        bg = int(rng.integers(0, len(PALETTE)))
        fg = int(rng.integers(0, len(PALETTE) - 1))
        return PALETTE[bg], PALETTE[fg + (fg >= bg)]
    bg = tuple(int(v) for v in rng.integers(0, 256, 3))
    fg = tuple(int(v) for v in rng.integers(0, 256, 3))
    while sum(abs(a - b) for a, b in zip(bg, fg)) < 150:
        fg = tuple(int(v) for v in rng.integers(0, 256, 3))
    return bg, fg


def render(label: int, rng: np.random.Generator, size: int, colors: str = "random") -> Image.Image:
    s = 4 * size  # draw large, then downsample: smooth edges
    bg, fg = _colours(rng, colors)
    img = Image.new("RGB", (s, s), bg)
    d = ImageDraw.Draw(img)
    r = s * rng.uniform(0.22, 0.4)
    cx, cy = (s * rng.uniform(0.35, 0.65) for _ in range(2))
    rot = rng.uniform(0, 2 * math.pi)
    name = CLASSES[label]
    if name == "disc":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fg)
    elif name == "square":
        d.polygon(_polygon(cx, cy, r, 4, rot), fill=fg)
    elif name == "triangle":
        d.polygon(_polygon(cx, cy, r, 3, rot), fill=fg)
    elif name == "cross":
        w = r * 0.35
        d.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fg)
        d.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fg)
    elif name == "ring":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fg)
        d.ellipse([cx - r * 0.55, cy - r * 0.55, cx + r * 0.55, cy + r * 0.55], fill=bg)
    elif name in ("h-stripes", "v-stripes"):
        period = s / rng.uniform(3.0, 6.0)
        for k in range(int(s / period) + 1):
            a = k * period
            box = [0, a, s, a + period / 2] if name == "h-stripes" else [a, 0, a + period / 2, s]
            d.rectangle(box, fill=fg)
    elif name == "checker":
        period = s / rng.uniform(3.0, 5.0)
        n = int(s / period) + 1
        for i in range(n):
            for j in range(n):
                if (i + j) % 2 == 0:
                    d.rectangle([i * period, j * period, (i + 1) * period, (j + 1) * period], fill=fg)
    elif name == "diamond":
        d.polygon([(cx, cy - r), (cx + r * 0.6, cy), (cx, cy + r), (cx - r * 0.6, cy)], fill=fg)
    elif name == "star":
        d.polygon(_polygon(cx, cy, r, 5, rot, inner=0.45), fill=fg)
    arr = np.asarray(img.resize((size, size), Image.BILINEAR), dtype=np.int16)
    arr = arr + rng.integers(-12, 13, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


class SyntheticShapes(Dataset):
    def __init__(self, split: str = "train", size: int = 2000, image_size: int = 32, seed: int = 0,
                 colors: str = "random"):
        if split not in _SPLIT_IDS:
            raise DatasetError(f"the synthetic dataset has splits 'train' and 'test', not '{split}'.")
        if colors not in COLOR_MODES:
            raise DatasetError(f"DATA.SYNTHETIC_COLORS {colors!r}: choose one of {', '.join(COLOR_MODES)}.")
        self.split, self.size, self.image_size, self.seed, self.colors = split, size, image_size, seed, colors
        self.classes = list(CLASSES)
        self.targets = [i % len(CLASSES) for i in range(size)]

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int):
        label = self.targets[i]
        rng = np.random.default_rng(derive_seed(self.seed, _SPLIT_IDS[self.split], i))
        return render(label, rng, self.image_size, self.colors), label
