"""CMC (Tian et al. 2019) on Lab colour: the L channel and the ab channels are the two views.

One ResNet per view (input channels 1 and 2, CMC.WIDTH each), one memory bank per view.  The L anchor
is scored against the ab bank (positive: the ab bank entry of the same image) and the ab anchor
against the L bank; each direction draws its k - 1 negatives uniformly (NCE) or from its own ring
(CNCE); the two losses are summed.  RGB -> Lab runs on the device, batched, with kornia.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from pretrain import distributed as D
from pretrain.contrastive.objectives import OBJECTIVE_REGISTRY
from pretrain.contrastive.objectives.base import BANK_CONFIG, ContrastiveObjective
from pretrain.contrastive.pools import MemoryBank
from pretrain.data.color import STREAMS, rgb01_to_normalized_lab, split_streams, stream_channels
from pretrain.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from pretrain.modeling.backbones import build_backbone, build_encoder


def normalized_rgb_to_lab(x: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised RGB (B, 3, H, W) -> CMC-normalised Lab (B, 3, H, W)."""
    mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return rgb01_to_normalized_lab((x * std + mean).clamp(0.0, 1.0).float())


class LabTwoStream(nn.Module):
    """The evaluated CMC backbone: RGB -> Lab, L and ab trunks side by side, features concatenated."""

    def __init__(self, l_trunk: nn.Module, ab_trunk: nn.Module):
        super().__init__()
        self.l, self.ab = l_trunk, ab_trunk
        self.feature_dim = l_trunk.feature_dim + ab_trunk.feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        views = split_streams(normalized_rgb_to_lab(x))
        return torch.cat([getattr(self, s)(views[s]) for s in STREAMS], dim=1)


# CMC.WIDTH: the width of each of the two ResNets (L and ab): half-width each, as CMC
@OBJECTIVE_REGISTRY.register(name="cmc", config={**BANK_CONFIG, "CMC": {"WIDTH": 32}})
class CMC(ContrastiveObjective):
    views = 1
    input_streams = "lab"  # L and ab, each through its own ResNet

    def __init__(self, cfg, dataset_size: int, global_batch: int):
        super().__init__(cfg, dataset_size, global_batch)
        self.encoder_l = build_encoder(cfg.MODEL, in_chans=stream_channels("l"), width=cfg.CMC.WIDTH)
        self.encoder_ab = build_encoder(cfg.MODEL, in_chans=stream_channels("ab"), width=cfg.CMC.WIDTH)
        self.backbone = LabTwoStream(self.encoder_l.backbone, self.encoder_ab.backbone)
        self.bank_l = MemoryBank(dataset_size, cfg.MODEL.OUT_DIM, cfg.BANK.MOMENTUM)
        self.bank_ab = MemoryBank(dataset_size, cfg.MODEL.OUT_DIM, cfg.BANK.MOMENTUM)

    @classmethod
    def build_backbone(cls, cfg) -> nn.Module:
        def trunk(stream):
            return build_backbone(cfg.MODEL.BACKBONE, cfg.MODEL.SMALL_STEM, in_chans=stream_channels(stream),
                                  width=cfg.CMC.WIDTH)
        return LabTwoStream(trunk("l"), trunk("ab"))

    def embed(self, x):  # the L stream's projection: the anchors of CMC's first loss
        return F.normalize(self.encoder_l(split_streams(normalized_rgb_to_lab(x))["l"]).float(), dim=1)

    def forward(self, view, _unused=None, index=None):
        views = split_streams(normalized_rgb_to_lab(view))
        z_l, z_ab = self.encoder_l(views["l"]), self.encoder_ab(views["ab"])
        neg_l = self.negatives_from_bank(z_l, self.bank_ab, index)  # L anchors against the ab bank
        loss_l = self.loss(neg_l)
        loss_ab = self.loss(self.negatives_from_bank(z_ab, self.bank_l, index))  # and ab against L
        all_index = D.all_gather_cat(index)
        self.bank_l.update(all_index, D.all_gather_cat(z_l.detach().float()))
        self.bank_ab.update(all_index, D.all_gather_cat(z_ab.detach().float()))
        # the per-direction losses stay tensors: the engine reads them only at log steps
        return loss_l + loss_ab, {**self.step_stats(neg_l), "loss_l": loss_l.detach(),
                                  "loss_ab": loss_ab.detach()}
