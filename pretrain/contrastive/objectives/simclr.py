"""SimCLR: both views of the batch form the pool (in-batch negatives, gathered from all ranks).

For each anchor the candidates are the 2N - 2 other embeddings of the global batch, i.e. without the
anchor itself and without its positive (the other view of the same image), whose logit is the
separate positive term.  NCE uses every candidate (NT-Xent); the ring keeps ranks [inner, outer) of
them (the paper's early code: o = 0.5, iota = 0.1).
"""
from __future__ import annotations

import torch

from pretrain import distributed as D
from pretrain.contrastive.objectives import OBJECTIVE_REGISTRY
from pretrain.contrastive.objectives.base import ContrastiveObjective, full_precision
from pretrain.contrastive.samplers import kept_positions
from pretrain.modeling.backbones import build_encoder


@OBJECTIVE_REGISTRY.register(name="simclr")
class SimCLR(ContrastiveObjective):
    def __init__(self, cfg, dataset_size: int, global_batch: int):
        super().__init__(cfg, dataset_size, global_batch)
        self.encoder = build_encoder(cfg.MODEL)

    @property
    def backbone(self):
        return self.encoder.backbone

    def forward(self, v1, v2, index=None):
        b = len(v1)
        z = self.encoder(torch.cat([v1, v2]))  # local [view1; view2], (2B, D)
        with full_precision(z):
            return self.batch_loss(z.float(), b)

    def batch_loss(self, z: torch.Tensor, b: int):
        """The loss of this rank's 2B embeddings against the global batch's (fp32)."""
        pool = D.all_gather_with_grad(z)  # rank-major: [r0 view1; r0 view2; r1 view1; ...]
        scores = z @ pool.t()
        rows = torch.arange(2 * b, device=z.device)
        own = D.get_rank() * 2 * b + rows
        partner = D.get_rank() * 2 * b + (rows + b) % (2 * b)
        pos = scores[rows, partner]
        keep = torch.ones_like(scores, dtype=torch.bool)
        keep[rows, own] = False
        keep[rows, partner] = False
        pool_rows = kept_positions(keep, pool.shape[0] - 2)  # without boolean-mask indexing (no host sync)
        candidates = scores.gather(1, pool_rows)
        neg = self.negatives_from_scores(z, pos, candidates, pool, pool_rows)
        return self.loss(neg), self.step_stats(neg)
