"""SimCLR: both views of the batch form the pool (in-batch negatives, gathered from all ranks).

For each anchor the candidates are the 2N - 2 other embeddings of the global batch, i.e. without the
anchor itself and without its positive (the other view of the same image), whose logit is the
separate positive term.  NCE uses every candidate (NT-Xent); the ring keeps ranks [inner, outer) of
them (the paper's early code: o = 0.5, iota = 0.1).
"""
from __future__ import annotations

import torch

from ... import distributed as D
from ...backbones import build_encoder
from ..estimator import contrastive_loss
from . import register_objective
from .base import ContrastiveObjective


def gather_with_grad(z: torch.Tensor) -> torch.Tensor:
    """All ranks' z, concatenated; gradients flow through this rank's slice."""
    if not D.is_dist():
        return z
    everything = D.all_gather_cat(z.detach())
    r, n = D.get_rank(), len(z)
    return torch.cat([everything[:r * n], z, everything[(r + 1) * n:]])


@register_objective("simclr")
class SimCLR(ContrastiveObjective):
    def __init__(self, cfg, dataset_size: int, global_batch: int):
        super().__init__(cfg)
        self.encoder = build_encoder(cfg.MODEL)

    @property
    def backbone(self):
        return self.encoder.backbone

    def forward(self, v1, v2, index=None):
        b = len(v1)
        z = self.encoder(torch.cat([v1, v2]))  # local [view1; view2], (2B, D)
        pool = gather_with_grad(z)  # rank-major: [r0 view1; r0 view2; r1 view1; ...]
        scores = z @ pool.t()
        rows = torch.arange(2 * b, device=z.device)
        own = D.get_rank() * 2 * b + rows
        partner = D.get_rank() * 2 * b + (rows + b) % (2 * b)
        pos = scores[rows, partner]
        keep = torch.ones_like(scores, dtype=torch.bool)
        keep[rows, own] = False
        keep[rows, partner] = False
        candidates = scores[keep].view(2 * b, pool.shape[0] - 2)
        neg = self.select_negatives(candidates)
        return contrastive_loss(pos, neg, self.temperature), self.step_stats(neg)
