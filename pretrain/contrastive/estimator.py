"""InfoNCE / CNCE: cross-entropy over [positive, negatives] with the positive in the denominator.

loss = -mean_i( s_pos_i - logsumexp([s_pos_i, s_neg_i1, ..., s_neg_ik]) ),  s = similarity / tau.
NCE and CNCE share this formula; they differ only in where the negatives come from (the sampler).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def contrastive_loss(pos: torch.Tensor, neg: torch.Tensor, temperature: float) -> torch.Tensor:
    """pos: (B,) similarities of each anchor to its positive; neg: (B, M) similarities to its negatives."""
    logits = torch.cat([pos.unsqueeze(1), neg], dim=1).float() / temperature
    target = torch.zeros(len(logits), dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target)
