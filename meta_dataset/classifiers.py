"""Few-shot classifiers on frozen features, and 95% confidence intervals."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from pretrain.common import Registry

CLASSIFIER_REGISTRY = Registry("CLASSIFIER", key="--classifier", doc="""Few-shot classifiers.

A member is a function ``predict(support (S, D), support_labels (S,), query (Q, D), ways) -> (Q,)``
predicted labels in [0, ways), fitted on the support set of one episode only.""")


def nearest_centroid(metric: str) -> Callable:
    def predict(support, s_lab, query, ways):
        protos = torch.stack([support[s_lab == j].mean(0) for j in range(ways)])
        if metric == "cosine":
            return (F.normalize(query, dim=1) @ F.normalize(protos, dim=1).t()).argmax(1)
        return torch.cdist(query, protos).argmin(1)
    return predict


def logistic_regression(support, s_lab, query, ways, steps: int = 100, weight_decay: float = 1e-3):
    """Multinomial logistic regression on L2-normalised features, full-batch L-BFGS, per episode."""
    xs, xq = F.normalize(support, dim=1), F.normalize(query, dim=1)
    w = torch.zeros(xs.shape[1], ways, requires_grad=True)
    b = torch.zeros(ways, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(xs @ w * 10 + b, s_lab) + weight_decay * (w ** 2).sum()
        loss.backward()
        return loss
    opt.step(closure)
    with torch.no_grad():
        return (xq @ w * 10 + b).argmax(1)


CLASSIFIER_REGISTRY.register(nearest_centroid("cosine"), name="ncc-cosine")
CLASSIFIER_REGISTRY.register(nearest_centroid("euclidean"), name="ncc-euclidean")
CLASSIFIER_REGISTRY.register(logistic_regression, name="logreg")


def mean_ci95(values) -> tuple[float, float]:
    """Mean and the half-width of its 95% normal-approximation confidence interval."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return float(v.mean()), float("nan")
    return float(v.mean()), float(1.96 * v.std(ddof=1) / math.sqrt(len(v)))
