"""Instance discrimination (Wu et al. 2018) with a memory bank of the whole training set.

One augmented view per image; the positive is the bank entry of the same image; k - 1 negatives are
drawn with replacement from the bank (uniformly: NCE) or from the anchor's ring (CNCE).  The bank is
updated with the batch's embeddings after the step (gathered from all ranks under DDP).
"""
from __future__ import annotations

import torch

from ... import distributed as D
from ...backbones import build_encoder
from ..estimator import contrastive_loss
from ..pools import MemoryBank
from . import register_objective
from .base import ContrastiveObjective


def bank_logits(z: torch.Tensor, bank: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Similarities (B, k) of each anchor to the bank entries idx (B, k); gradients flow into z only."""
    return torch.bmm(bank[idx].to(z.dtype), z.unsqueeze(2)).squeeze(2)


@register_objective("ir")
class InstanceDiscrimination(ContrastiveObjective):
    views = 1

    def __init__(self, cfg, dataset_size: int, global_batch: int):
        super().__init__(cfg)
        self.encoder = build_encoder(cfg.MODEL)
        self.memory = MemoryBank(dataset_size, cfg.MODEL.OUT_DIM, cfg.BANK.MOMENTUM)
        self.num_negatives, self.score_block = int(cfg.BANK.NUM_NEGATIVES), int(cfg.BANK.SCORE_BLOCK)

    @property
    def backbone(self):
        return self.encoder.backbone

    def forward(self, view, _unused=None, index=None):
        z = self.encoder(view)
        bank = self.memory.candidates()
        pos = (z * self.memory.get(index).to(z.dtype)).sum(dim=1)
        neg = bank_logits(z, bank, self.draw_from_bank(z, bank, self.num_negatives, self.score_block))
        loss = contrastive_loss(pos, neg, self.temperature)
        self.memory.update(D.all_gather_cat(index), D.all_gather_cat(z.detach().float()))
        return loss, self.step_stats(neg)
