"""Detectron2 registrations: C4 heads for every ResNet depth (MoCo's with a norm after res5), and the CMC
two-stream backbone.  Both extend Detectron2 through its public seams (``from_config``, the registries)."""
from __future__ import annotations

import torch
from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY, ROI_HEADS_REGISTRY
from detectron2.modeling.backbone import Backbone
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool
from detectron2.modeling.backbone.resnet import BasicBlock, BasicStem, BottleneckBlock, ResNet
from detectron2.modeling.poolers import ROIPooler
from detectron2.modeling.roi_heads import FastRCNNOutputLayers, Res5ROIHeads, ROIHeads, build_mask_head

from pretrain.data.color import STREAMS, rgb01_to_normalized_lab, split_streams, stream_channels
from transfer.detection import TransferError
from transfer.detection.resnet_table import DEPTHS


def res5_head_stage(cfg) -> tuple[torch.nn.Sequential, int]:
    """res5 as the RoI head, built for the backbone's depth (stride 2 in its first block): three bottleneck
    blocks for R50/101 (as Detectron2 builds them), the depth's basic blocks for R18/34, so that the
    pretrained res5 weights load by suffix."""
    r = cfg.MODEL.RESNETS
    kind, blocks = DEPTHS[r.DEPTH]
    out_channels = r.RES2_OUT_CHANNELS * 8
    strides = [2] + [1] * (blocks[3] - 1)
    if kind == "bottleneck":
        if r.DEFORM_ON_PER_STAGE[-1]:
            raise TransferError("MODEL.RESNETS.DEFORM_ON_PER_STAGE: a deformable res5 cannot be the C4 RoI head; "
                                "set its last entry to False.")
        stage = ResNet.make_stage(BottleneckBlock, blocks[3], stride_per_block=strides, in_channels=out_channels // 2,
                                  bottleneck_channels=r.NUM_GROUPS * r.WIDTH_PER_GROUP * 8, out_channels=out_channels,
                                  num_groups=r.NUM_GROUPS, norm=r.NORM, stride_in_1x1=r.STRIDE_IN_1X1)
    else:
        stage = ResNet.make_stage(BasicBlock, blocks[3], stride_per_block=strides, in_channels=out_channels // 2,
                                  out_channels=out_channels, norm=r.NORM)
    return torch.nn.Sequential(*stage), out_channels


@ROI_HEADS_REGISTRY.register()
class Res5ROIHeadsAnyDepth(Res5ROIHeads):
    """Res5ROIHeads for every ResNet depth, ResNet-18/34 included (the paper's backbone in a C4 model).

    Detectron2's Res5ROIHeads always builds three bottleneck blocks; ``from_config`` (its public seam)
    builds the pooler, the depth's res5, the box predictor and the mask head, in Detectron2's order."""

    extra_norm = False

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = ROIHeads.from_config(cfg)
        in_features = ret["in_features"] = cfg.MODEL.ROI_HEADS.IN_FEATURES
        if cfg.MODEL.KEYPOINT_ON or len(in_features) != 1:
            raise TransferError("a C4 RoI head takes one feature map (MODEL.ROI_HEADS.IN_FEATURES) and no keypoint "
                                "head (MODEL.KEYPOINT_ON False); use an FPN config for keypoints.")
        resolution = cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION
        ret["pooler"] = ROIPooler(output_size=resolution, scales=(1.0 / input_shape[in_features[0]].stride,),
                                  sampling_ratio=cfg.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO,
                                  pooler_type=cfg.MODEL.ROI_BOX_HEAD.POOLER_TYPE)
        ret["res5"], out_channels = res5_head_stage(cfg)
        if cls.extra_norm:
            ret["res5"].add_module("norm", get_norm(cfg.MODEL.RESNETS.NORM, out_channels))
        ret["box_predictor"] = FastRCNNOutputLayers(cfg, ShapeSpec(channels=out_channels, height=1, width=1))
        if cfg.MODEL.MASK_ON:
            ret["mask_head"] = build_mask_head(cfg, ShapeSpec(channels=out_channels, width=resolution,
                                                              height=resolution))
        return ret


@ROI_HEADS_REGISTRY.register()
class Res5ROIHeadsExtraNorm(Res5ROIHeadsAnyDepth):
    """Res5ROIHeadsAnyDepth whose res5 ends with one more norm layer (MoCo's C4 transfer recipe): the
    pretrained res5 never saw a normalisation after its last residual sum, and the box head trains better
    with one."""

    extra_norm = True


def add_cmc_config(cfg: CfgNode) -> None:
    cfg.MODEL.CMC = CfgNode()
    cfg.MODEL.CMC.WIDTH = 32  # each stream's stem/res2 width (CMC: half a ResNet per view)


def resnet_stream(in_chans: int, width: int, depth: int, norm: str, out_features, freeze_at: int) -> ResNet:
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
        for name in STREAMS:  # attributes 'l' and 'ab': the prefixes of the exported weights
            self.add_module(name, resnet_stream(stream_channels(name), *args))
        self.register_buffer("pixel_mean", torch.tensor(cfg.MODEL.PIXEL_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(cfg.MODEL.PIXEL_STD).view(1, 3, 1, 1), False)
        self._out_feature_channels = {f: sum(getattr(self, s)._out_feature_channels[f] for s in STREAMS)
                                      for f in self._out_features}
        self._out_feature_strides = {f: self.l._out_feature_strides[f] for f in self._out_features}

    def forward(self, x):
        rgb = ((x * self.pixel_std + self.pixel_mean) / 255.0).clamp(0, 1)  # undo the model's normalisation
        views = split_streams(rgb01_to_normalized_lab(rgb))
        feats = [getattr(self, s)(views[s]) for s in STREAMS]
        return {k: torch.cat([f[k] for f in feats], dim=1) for k in self._out_features}

    def output_shape(self):
        return {f: ShapeSpec(channels=self._out_feature_channels[f], stride=self._out_feature_strides[f])
                for f in self._out_features}


@BACKBONE_REGISTRY.register()
def build_cmc_resnet_backbone(cfg, input_shape):
    return CMCResNet(cfg)


def _with_fpn(cfg, bottom_up: Backbone) -> FPN:
    return FPN(bottom_up=bottom_up, in_features=cfg.MODEL.FPN.IN_FEATURES, out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
               norm=cfg.MODEL.FPN.NORM, top_block=LastLevelMaxPool(), fuse_type=cfg.MODEL.FPN.FUSE_TYPE)


@BACKBONE_REGISTRY.register()
def build_cmc_resnet_fpn_backbone(cfg, input_shape):
    return _with_fpn(cfg, CMCResNet(cfg))


@BACKBONE_REGISTRY.register()
def build_resnet_any_width_backbone(cfg, input_shape):
    """A ResNet whose stem and first stage have MODEL.RESNETS.STEM_OUT_CHANNELS channels (stages 2-4 double
    it), at any depth: the narrow backbones pretrained on a CPU (MODEL.WIDTH).  Detectron2's own builder
    fixes 64 for ResNet-18/34.  Same parameter names, so a ring-export .pkl loads as into Detectron2's."""
    r = cfg.MODEL.RESNETS
    return resnet_stream(input_shape.channels, r.STEM_OUT_CHANNELS, r.DEPTH, r.NORM, r.OUT_FEATURES,
                   cfg.MODEL.BACKBONE.FREEZE_AT)


@BACKBONE_REGISTRY.register()
def build_resnet_any_width_fpn_backbone(cfg, input_shape):
    return _with_fpn(cfg, build_resnet_any_width_backbone(cfg, input_shape))
