"""Top-k accuracy of class scores, the number every frozen-feature evaluation reports."""
from __future__ import annotations

import torch


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> dict[str, float]:
    res = {}
    for k in ks:
        k_ = min(k, scores.shape[1])
        hit = (scores.topk(k_, dim=1).indices == labels.unsqueeze(1)).any(dim=1)
        res[f"top{k}"] = 100.0 * hit.float().mean().item()
    return res
