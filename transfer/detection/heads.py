"""Detectron2 registrations: C4 heads for every ResNet depth (MoCo's with a norm after res5), and the CMC
two-stream backbone."""
from __future__ import annotations

import torch
from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY, ROI_HEADS_REGISTRY
from detectron2.modeling.backbone import Backbone
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool
from detectron2.modeling.backbone.resnet import BasicBlock, BasicStem, BottleneckBlock, ResNet
from detectron2.modeling.roi_heads import Res5ROIHeads

from pretrain.contrastive.objectives.cmc import LAB_MEAN, LAB_STD

from .resnet_table import DEPTHS


def res5_head_stage(cfg) -> tuple[torch.nn.Sequential, int]:
    """res5 as the RoI head, built for the backbone's depth: Detectron2's own builder always makes three
    bottleneck blocks, so a ResNet-18/34 res5 (basic blocks, 2 or 3 of them) would not match its weights."""
    r = cfg.MODEL.RESNETS
    kind, blocks = DEPTHS[r.DEPTH]
    if kind == "bottleneck":
        return Res5ROIHeads._build_res5_block(cfg)
    out_channels = r.RES2_OUT_CHANNELS * 8
    stage = ResNet.make_stage(BasicBlock, blocks[3], stride_per_block=[2] + [1] * (blocks[3] - 1),
                              in_channels=out_channels // 2, out_channels=out_channels, norm=r.NORM)
    return torch.nn.Sequential(*stage), out_channels


@ROI_HEADS_REGISTRY.register()
class Res5ROIHeadsAnyDepth(Res5ROIHeads):
    """Res5ROIHeads for every ResNet depth, ResNet-18/34 included (the paper's backbone in a C4 model)."""

    @classmethod
    def _build_res5_block(cls, cfg):
        return res5_head_stage(cfg)


@ROI_HEADS_REGISTRY.register()
class Res5ROIHeadsExtraNorm(Res5ROIHeadsAnyDepth):
    """Res5ROIHeadsAnyDepth whose res5 ends with one more norm layer (MoCo's C4 transfer recipe): the
    pretrained res5 never saw a normalisation after its last residual sum, and the box head trains better
    with one."""

    @classmethod
    def _build_res5_block(cls, cfg):
        seq, out_channels = res5_head_stage(cfg)
        seq.add_module("norm", get_norm(cfg.MODEL.RESNETS.NORM, out_channels))
        return seq, out_channels


def add_cmc_config(cfg: CfgNode) -> None:
    cfg.MODEL.CMC = CfgNode()
    cfg.MODEL.CMC.WIDTH = 32  # each stream's stem/res2 width (CMC: half a ResNet per view)


def _stream(in_chans: int, width: int, depth: int, norm: str, out_features, freeze_at: int) -> ResNet:
    kind, blocks = DEPTHS[depth]
    stem = BasicStem(in_channels=in_chans, out_channels=width, norm=norm)
    stages, in_ch = [], width
    for i, n in enumerate(blocks):
        planes = width * 2 ** i
        out_ch = planes if kind == "basic" else planes * 4
        extra = {} if kind == "basic" else {"bottleneck_channels": planes, "stride_in_1x1": False}
        stages.append(ResNet.make_stage(block_class=BasicBlock if kind == "basic" else BottleneckBlock, num_blocks=n,
                                        stride_per_block=[1 if i == 0 else 2] + [1] * (n - 1), in_channels=in_ch,
                                        out_channels=out_ch, norm=norm, **extra))
        in_ch = out_ch
    return ResNet(stem, stages, out_features=out_features).freeze(freeze_at)


class CMCResNet(Backbone):
    """RGB -> Lab inside the model; an L stream (1 channel) and an ab stream (2 channels) side by side,
    their features concatenated per stage (res2..res5), so FPN and RoI heads see one backbone."""

    def __init__(self, cfg, out_features=None):
        super().__init__()
        r = cfg.MODEL.RESNETS
        self._out_features = list(out_features or r.OUT_FEATURES)
        args = (cfg.MODEL.CMC.WIDTH, r.DEPTH, r.NORM, self._out_features, cfg.MODEL.BACKBONE.FREEZE_AT)
        self.l, self.ab = _stream(1, *args), _stream(2, *args)
        self.register_buffer("pixel_mean", torch.tensor(cfg.MODEL.PIXEL_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(cfg.MODEL.PIXEL_STD).view(1, 3, 1, 1), False)
        self._out_feature_channels = {f: 2 * self.l._out_feature_channels[f] for f in self._out_features}
        self._out_feature_strides = {f: self.l._out_feature_strides[f] for f in self._out_features}

    def forward(self, x):
        import kornia

        rgb = ((x * self.pixel_std + self.pixel_mean) / 255.0).clamp(0, 1)  # undo the model's normalisation
        lab = kornia.color.rgb_to_lab(rgb)
        lab = (lab - lab.new_tensor(LAB_MEAN).view(1, 3, 1, 1)) / lab.new_tensor(LAB_STD).view(1, 3, 1, 1)
        fl, fab = self.l(lab[:, :1]), self.ab(lab[:, 1:])
        return {k: torch.cat([fl[k], fab[k]], dim=1) for k in self._out_features}

    def output_shape(self):
        return {f: ShapeSpec(channels=self._out_feature_channels[f], stride=self._out_feature_strides[f])
                for f in self._out_features}


@BACKBONE_REGISTRY.register()
def build_cmc_resnet_backbone(cfg, input_shape):
    return CMCResNet(cfg)


@BACKBONE_REGISTRY.register()
def build_cmc_resnet_fpn_backbone(cfg, input_shape):
    bottom_up = CMCResNet(cfg)
    return FPN(bottom_up=bottom_up, in_features=cfg.MODEL.FPN.IN_FEATURES, out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
               norm=cfg.MODEL.FPN.NORM, top_block=LastLevelMaxPool(), fuse_type=cfg.MODEL.FPN.FUSE_TYPE)
