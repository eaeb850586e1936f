"""The parameter names and shapes of Detectron2's ResNet backbones, generated per depth (no Detectron2 import).

Detectron2 (``build_resnet_backbone``): stem ``stem.conv1`` (7x7, 64 channels) with ``.norm``; stages
res2..res5 of BasicBlocks (R18/34: conv1, conv2) or BottleneckBlocks (R50/101: conv1 1x1, conv2 3x3,
conv3 1x1, 4x expansion), each conv with ``.norm``; the first block of a stage has ``shortcut`` (+norm)
when its input and output channels differ (not res2 of R18/34).  Norm layers hold weight, bias,
running_mean, running_var (FrozenBN and BN alike).
"""
from __future__ import annotations

from pretrain.modeling.backbones import RESNET_DEPTHS as DEPTHS

NORM = ("weight", "bias", "running_mean", "running_var")


def _conv(out: dict, name: str, shape: tuple[int, ...]) -> None:
    out[f"{name}.weight"] = shape
    for p in NORM:
        out[f"{name}.norm.{p}"] = (shape[0],)


def detectron2_resnet_shapes(depth: int, in_chans: int = 3, width: int = 64) -> dict[str, tuple[int, ...]]:
    """Names and shapes; ``width`` != 64 only for our CMC streams (Detectron2's own R18/34 require 64)."""
    if depth not in DEPTHS:
        raise ValueError(f"no Detectron2 ResNet of depth {depth}; depths are {sorted(DEPTHS)}")
    kind, blocks = DEPTHS[depth]
    shapes: dict[str, tuple[int, ...]] = {}
    _conv(shapes, "stem.conv1", (width, in_chans, 7, 7))
    in_ch, base = width, width
    for s, n in enumerate(blocks):
        width = base * 2 ** s
        out_ch = width if kind == "basic" else width * 4
        for i in range(n):
            pre = f"res{s + 2}.{i}"
            if i == 0 and in_ch != out_ch:
                _conv(shapes, f"{pre}.shortcut", (out_ch, in_ch, 1, 1))
            if kind == "basic":
                _conv(shapes, f"{pre}.conv1", (width, in_ch, 3, 3))
                _conv(shapes, f"{pre}.conv2", (width, width, 3, 3))
            else:
                _conv(shapes, f"{pre}.conv1", (width, in_ch, 1, 1))
                _conv(shapes, f"{pre}.conv2", (width, width, 3, 3))
                _conv(shapes, f"{pre}.conv3", (out_ch, width, 1, 1))
            in_ch = out_ch
    return shapes
