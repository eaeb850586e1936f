"""CMC (Tian et al. 2019) on Lab colour: the L channel and the ab channels are the two views.

One ResNet per view (input channels 1 and 2, CMC.WIDTH each), one memory bank per view.  The L anchor
is scored against the ab bank (positive: the ab bank entry of the same image) and the ab anchor
against the L bank; each direction draws its k - 1 negatives uniformly (NCE) or from its own ring
(CNCE); the two losses are summed.  RGB -> Lab runs on the device, batched, with kornia.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ... import distributed as D
from ...augment import IMAGENET_MEAN, IMAGENET_STD
from ...backbones import build_backbone, build_encoder
from ..estimator import contrastive_loss
from ..pools import MemoryBank
from . import register_objective
from .base import ContrastiveObjective
from .ir import bank_logits

# CMC's Lab normalisation: centre and half-range of L, a, b over the sRGB gamut.
LAB_MEAN = (50.0, (-86.183 + 98.233) / 2, (-107.857 + 94.478) / 2)
LAB_STD = (50.0, (86.183 + 98.233) / 2, (107.857 + 94.478) / 2)


def normalized_rgb_to_lab(x: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised RGB (B, 3, H, W) -> CMC-normalised Lab (B, 3, H, W)."""
    import kornia

    mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    rgb = (x * std + mean).clamp(0.0, 1.0)
    lab = kornia.color.rgb_to_lab(rgb.float())
    return (lab - lab.new_tensor(LAB_MEAN).view(1, 3, 1, 1)) / lab.new_tensor(LAB_STD).view(1, 3, 1, 1)


class LabTwoStream(nn.Module):
    """The evaluated CMC backbone: RGB -> Lab, L and ab trunks side by side, features concatenated."""

    def __init__(self, l_trunk: nn.Module, ab_trunk: nn.Module):
        super().__init__()
        self.l, self.ab = l_trunk, ab_trunk
        self.feature_dim = l_trunk.feature_dim + ab_trunk.feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lab = normalized_rgb_to_lab(x)
        return torch.cat([self.l(lab[:, :1]), self.ab(lab[:, 1:])], dim=1)


@register_objective("cmc")
class CMC(ContrastiveObjective):
    views = 1

    def __init__(self, cfg, dataset_size: int, global_batch: int):
        super().__init__(cfg)
        self.encoder_l = build_encoder(cfg.MODEL, in_chans=1, width=cfg.CMC.WIDTH)
        self.encoder_ab = build_encoder(cfg.MODEL, in_chans=2, width=cfg.CMC.WIDTH)
        self.backbone = LabTwoStream(self.encoder_l.backbone, self.encoder_ab.backbone)
        self.bank_l = MemoryBank(dataset_size, cfg.MODEL.OUT_DIM, cfg.BANK.MOMENTUM)
        self.bank_ab = MemoryBank(dataset_size, cfg.MODEL.OUT_DIM, cfg.BANK.MOMENTUM)
        self.num_negatives, self.score_block = int(cfg.BANK.NUM_NEGATIVES), int(cfg.BANK.SCORE_BLOCK)

    @classmethod
    def build_backbone(cls, cfg) -> nn.Module:
        def trunk(c):
            return build_backbone(cfg.MODEL.BACKBONE, cfg.MODEL.SMALL_STEM, in_chans=c, width=cfg.CMC.WIDTH)
        return LabTwoStream(trunk(1), trunk(2))

    def _direction(self, anchor: torch.Tensor, other: MemoryBank, index: torch.Tensor) -> torch.Tensor:
        bank = other.candidates()
        pos = (anchor * other.get(index).to(anchor.dtype)).sum(dim=1)
        neg = bank_logits(anchor, bank, self.draw_from_bank(anchor, bank, self.num_negatives, self.score_block))
        return contrastive_loss(pos, neg, self.temperature), neg

    def forward(self, view, _unused=None, index=None):
        lab = normalized_rgb_to_lab(view)
        z_l, z_ab = self.encoder_l(lab[:, :1]), self.encoder_ab(lab[:, 1:])
        loss_l, neg = self._direction(z_l, self.bank_ab, index)
        loss_ab, _ = self._direction(z_ab, self.bank_l, index)
        all_index = D.all_gather_cat(index)
        self.bank_l.update(all_index, D.all_gather_cat(z_l.detach().float()))
        self.bank_ab.update(all_index, D.all_gather_cat(z_ab.detach().float()))
        return loss_l + loss_ab, {**self.step_stats(neg), "loss_l": float(loss_l.detach()),
                                  "loss_ab": float(loss_ab.detach())}
