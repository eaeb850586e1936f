"""Backbones (torchvision and timm ResNets by name), the small-image stem, and the projection head.

Every backbone answers ``forward(x) -> (B, feature_dim)`` pooled features and keeps torchvision's
parameter names (conv1, bn1, layer1..4), which is what the Detectron2 exporter maps.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from pretrain.common import UserError


class BackboneError(UserError):
    """MODEL.BACKBONE / MODEL.WIDTH name something this project cannot build."""


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
        self.conv1, self.bn1 = net.conv1, net.bn1
        self.act1 = net.relu if hasattr(net, "relu") else net.act1  # torchvision / timm
        self.maxpool = net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.feature_dim = net.fc.in_features

    def forward_maps(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(F.adaptive_avg_pool2d(self.forward_maps(x), 1), 1)


# ResNet depth -> (block kind, blocks per stage): the one table shared by the width-configurable ResNet here
# and the Detectron2 exporter's name/shape table (transfer/detection/resnet_table.py).
RESNET_DEPTHS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)), 50: ("bottleneck", (3, 4, 6, 3)),
                 101: ("bottleneck", (3, 4, 23, 3)), 152: ("bottleneck", (3, 8, 36, 3))}
WIDTH_CONFIGURABLE = {f"resnet{d}": d for d in RESNET_DEPTHS}


class _WidthResNet(torchvision.models.ResNet):
    """torchvision's ResNet (same blocks, names and init) with stem/layer1 width ``width`` instead of 64."""

    def __init__(self, name: str, width: int, in_chans: int):
        from torchvision.models.resnet import BasicBlock, Bottleneck

        kind, layers = RESNET_DEPTHS[WIDTH_CONFIGURABLE[name]]
        block = BasicBlock if kind == "basic" else Bottleneck
        nn.Module.__init__(self)
        self._norm_layer, self.inplanes, self.dilation, self.groups, self.base_width = nn.BatchNorm2d, width, 1, 1, 64
        self.conv1 = nn.Conv2d(in_chans, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1, self.relu = nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, 2 * width, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 4 * width, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 8 * width, layers[3], stride=2)
        self.avgpool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(8 * width * block.expansion, 1000)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)


def build_backbone(name: str, small_stem: bool = False, in_chans: int = 3, width: int = 64) -> ResNetTrunk:
    """'resnet18', 'resnet50', ... (torchvision) or 'timm:resnet50', ... ; randomly initialised.

    ``width`` != 64 gives a narrower/wider torchvision-style ResNet (CMC's half-width encoders, CPU runs)."""
    if width != 64:
        if name not in WIDTH_CONFIGURABLE:
            raise BackboneError(f"MODEL.WIDTH {width} needs one of {', '.join(WIDTH_CONFIGURABLE)} as MODEL.BACKBONE, "
                                f"not {name}.")
        net = _WidthResNet(name, width, in_chans)
        if small_stem:
            _small_stem(net, in_chans)
        return ResNetTrunk(net, name)
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


def build_encoder(model_cfg, in_chans: int = 3, width: int | None = None) -> Encoder:
    bb = build_backbone(model_cfg.BACKBONE, model_cfg.SMALL_STEM, in_chans, width or model_cfg.WIDTH)
    return Encoder(bb, ProjectionHead(bb.feature_dim, model_cfg.HEAD_HIDDEN, model_cfg.OUT_DIM))
