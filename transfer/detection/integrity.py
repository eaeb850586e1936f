"""Is an exported .pkl the same network in Detectron2?  Detectron2's ResNet is built for the weights, loads the
file the way ``train_net`` does (``DetectionCheckpointer``, matching heuristics included), and its res2-res5
feature maps on one fixed batch are compared with the source trunk's layer1-layer4 (BatchNorm as inference:
FrozenBN there, eval mode here).  The conversion is wrong if they differ beyond float rounding."""
from __future__ import annotations

import math
import tempfile
from pathlib import Path

import torch

from pretrain.common import UserError

FEATURES = ["res2", "res3", "res4", "res5"]
TOLERANCE = 1e-4  # relative to the largest activation: float32 rounding through up to 101 layers stays far below


class IntegrityError(UserError):
    """The exported weights compute other features in Detectron2 than in the source (one sentence)."""


def trunk_maps(trunk: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """layer1..layer4 outputs of a torchvision-named trunk (conv1, bn1, act, maxpool, layer1..4)."""
    act = getattr(trunk, "act1", None) or getattr(trunk, "relu")
    h = trunk.maxpool(act(trunk.bn1(trunk.conv1(x))))
    out = []
    for i in range(1, 5):
        h = getattr(trunk, f"layer{i}")(h)
        out.append(h)
    return out


def detectron2_resnet(depth: int, in_chans: int, width: int) -> torch.nn.Module:
    """Detectron2's own ``build_resnet_backbone`` where it can build the weights (64-wide RGB), else the
    any-width ResNet our configs name (``transfer.detection.heads``); FrozenBN, nothing frozen."""
    from transfer.detectron2_compat import ensure

    ensure()
    from detectron2.config import get_cfg
    from detectron2.layers import ShapeSpec
    from detectron2.modeling.backbone.resnet import build_resnet_backbone

    from transfer.detection.heads import resnet_stream

    if width == 64 and in_chans == 3:
        cfg = get_cfg()
        r = cfg.MODEL.RESNETS
        r.DEPTH, r.RES2_OUT_CHANNELS, r.STRIDE_IN_1X1, r.NORM, r.OUT_FEATURES = (
            depth, 64 if depth < 50 else 256, False, "FrozenBN", FEATURES)
        cfg.MODEL.BACKBONE.FREEZE_AT = 0
        return build_resnet_backbone(cfg, ShapeSpec(channels=3))
    return resnet_stream(in_chans, width, depth, "FrozenBN", FEATURES, 0)


def max_feature_difference(modules: dict[str, torch.nn.Module], pkl: str | Path, depth: int,
                           size: int = 64) -> float:
    """Max |res_k(Detectron2, pkl) - layer_{k-1}(source)| over every stream and stage; raises past tolerance."""
    from transfer.detectron2_compat import ensure

    ensure()
    from detectron2.checkpoint import DetectionCheckpointer

    d2 = torch.nn.Module()
    for stream, m in modules.items():
        stem = m.conv1.weight
        net = detectron2_resnet(depth, stem.shape[1], stem.shape[0])
        if stream:
            d2.add_module(stream, net)
        else:
            d2 = net
    with tempfile.TemporaryDirectory() as tmp:  # Detectron2 reads a pickle only under a .pkl name
        link = Path(tmp) / "weights.pkl"
        link.symlink_to(Path(pkl).resolve())
        DetectionCheckpointer(d2).load(str(link))
    worst, scale = 0.0, 0.0
    g = torch.Generator().manual_seed(0)
    for stream, m in modules.items():
        x = torch.randn(2, m.conv1.weight.shape[1], size, size, generator=g)
        net = getattr(d2, stream) if stream else d2
        with torch.no_grad():
            ref = trunk_maps(m.eval(), x)
            got = net.eval()(x)
        for f, r in zip(FEATURES, ref):
            d = (got[f] - r).abs().max().item()
            worst = max(worst, d if math.isfinite(d) else math.inf)  # NaN (a negative variance) is a failure
            scale = max(scale, r.abs().max().item())
    if not worst <= TOLERANCE * max(scale, 1.0):
        raise IntegrityError(f"{pkl}: Detectron2's ResNet-{depth} loaded from the export computes other features than "
                             f"the source (max |difference| {worst:.3g} on activations up to {scale:.3g}); the "
                             "conversion is wrong, do not train on it.")
    return worst
