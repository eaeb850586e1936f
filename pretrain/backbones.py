"""Backbones (torchvision and timm ResNets by name), the small-image stem, and the projection head.

Every backbone answers ``forward(x) -> (B, feature_dim)`` pooled features and keeps torchvision's
parameter names (conv1, bn1, layer1..4), which is what the Detectron2 exporter maps.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision


class BackboneError(ValueError):
    pass


def _small_stem(model: nn.Module, in_chans: int) -> None:
    """3x3 stride-1 conv, no max-pool: keeps 32-px images at 32x32 into layer1 (CIFAR practice)."""
    width = model.conv1.out_channels
    model.conv1 = nn.Conv2d(in_chans, width, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()


class ResNetTrunk(nn.Module):
    """A ResNet without its classifier: conv1/bn1/layer1..4 -> global average pool."""

    def __init__(self, net: nn.Module, name: str):
        super().__init__()
        self.name = name
        self.conv1, self.bn1, self.act1 = net.conv1, net.bn1, getattr(net, "relu", None) or net.act1
        self.maxpool = net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.feature_dim = net.fc.in_features

    def forward_maps(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(F.adaptive_avg_pool2d(self.forward_maps(x), 1), 1)


def build_backbone(name: str, small_stem: bool = False, in_chans: int = 3) -> ResNetTrunk:
    """'resnet18', 'resnet50', ... (torchvision) or 'timm:resnet50', ... ; randomly initialised."""
    if name.startswith("timm:"):
        import timm

        tname = name[5:]
        if not tname.startswith("resnet"):
            raise BackboneError(f"MODEL.BACKBONE '{name}': only timm ResNets are supported (e.g. timm:resnet50).")
        try:
            net = timm.create_model(tname, pretrained=False, num_classes=1000, in_chans=in_chans)
        except RuntimeError as e:
            raise BackboneError(f"MODEL.BACKBONE '{name}': timm does not know it ({e}).") from None
    else:
        ctor = getattr(torchvision.models, name, None)
        if ctor is None or not name.startswith(("resnet", "wide_resnet", "resnext")):
            raise BackboneError(f"MODEL.BACKBONE '{name}' is not a torchvision ResNet; use e.g. resnet18, resnet50 "
                                "or timm:resnet50.")
        net = ctor(weights=None)
        if in_chans != 3:
            net.conv1 = nn.Conv2d(in_chans, net.conv1.out_channels, 7, 2, 3, bias=False)
    if small_stem:
        _small_stem(net, in_chans)
    return ResNetTrunk(net, name)


class ProjectionHead(nn.Module):
    """MLP dim -> hidden -> out with ReLU, outputs L2-normalised."""

    def __init__(self, in_dim: int, hidden: int = 0, out_dim: int = 128):
        super().__init__()
        hidden = hidden or in_dim
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(x), dim=1)


class Encoder(nn.Module):
    """backbone + head: images -> L2-normalised embeddings."""

    def __init__(self, backbone: ResNetTrunk, head: ProjectionHead):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def build_encoder(model_cfg, in_chans: int = 3) -> Encoder:
    bb = build_backbone(model_cfg.BACKBONE, model_cfg.SMALL_STEM, in_chans)
    return Encoder(bb, ProjectionHead(bb.feature_dim, model_cfg.HEAD_HIDDEN, model_cfg.OUT_DIM))
