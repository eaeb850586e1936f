"""Instance discrimination (Wu et al. 2018) with a memory bank of the whole training set.

One augmented view per image; the positive is the bank entry of the same image; k - 1 negatives are
drawn with replacement from the bank (uniformly: NCE) or from the anchor's ring (CNCE).  The bank is
updated with the batch's embeddings after the step (gathered from all ranks under DDP).
"""
from __future__ import annotations

from pretrain import distributed as D
from pretrain.contrastive.objectives import OBJECTIVE_REGISTRY
from pretrain.contrastive.objectives.base import BANK_CONFIG, ContrastiveObjective
from pretrain.contrastive.pools import MemoryBank
from pretrain.modeling.backbones import build_encoder


@OBJECTIVE_REGISTRY.register(name="ir", config=BANK_CONFIG)
class InstanceDiscrimination(ContrastiveObjective):
    views = 1

    def __init__(self, cfg, dataset_size: int, global_batch: int):
        super().__init__(cfg, dataset_size, global_batch)
        self.encoder = build_encoder(cfg.MODEL)
        self.memory = MemoryBank(dataset_size, cfg.MODEL.OUT_DIM, cfg.BANK.MOMENTUM)

    @property
    def backbone(self):
        return self.encoder.backbone

    def forward(self, view, _unused=None, index=None):
        z = self.encoder(view)
        neg = self.negatives_from_bank(z, self.memory, index)  # fp32 inside, even under autocast
        loss = self.loss(neg)
        self.memory.update(D.all_gather_cat(index), D.all_gather_cat(z.detach().float()))
        return loss, self.step_stats(neg)
