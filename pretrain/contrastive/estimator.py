"""Estimators: the one choice a user makes about negatives (``OBJECTIVE.ESTIMATOR``).

An estimator is a negative sampler (which candidates, ``samplers.py``) plus a loss form (how the
selected negatives enter the loss).  ``nce``, ``ring`` and ``ball`` share the InfoNCE/CNCE form and
differ only in their sampler:

    loss = -mean_i( s_pos_i - logsumexp([s_pos_i, s_neg_i1, ..., s_neg_ik]) ),  s = similarity / tau,

with the positive in the denominator (cross-entropy on the logits).  A loss form receives a
``Negatives``, which also carries the pool and the selected indices, so a form that needs the negatives'
embeddings (e.g. one that mixes new negatives from them) can read them without the objective knowing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..common import Registry
from .samplers import SAMPLER_REGISTRY, Sampler

ESTIMATOR_REGISTRY = Registry("ESTIMATOR", key="OBJECTIVE.ESTIMATOR", doc="""Estimators (OBJECTIVE.ESTIMATOR).

A member is a builder ``fn(cfg) -> Estimator``: a ``Sampler`` (which negatives) and a loss form
``loss(negatives: Negatives, temperature: float) -> scalar tensor``.  Every objective (IR, CMC, MoCo,
SimCLR) calls the sampler on its pool and the loss on what was selected, so an estimator registered
once works for all four.""")


@dataclass
class Negatives:
    """What a loss form sees for B anchors.

    ``pos`` (B,) and ``logits`` (B, M) are similarities (not yet divided by the temperature), with
    gradients; ``anchors`` (B, D) are the anchors' embeddings; ``pool`` (N, D) the candidates' embeddings
    and ``indices`` (B, M) the selected rows of the pool per anchor (None: every row, in pool order)."""

    anchors: torch.Tensor
    pos: torch.Tensor
    logits: torch.Tensor
    pool: torch.Tensor
    indices: torch.Tensor | None

    def embeddings(self) -> torch.Tensor:
        """(B, M, D) embeddings of the selected negatives (materialised on demand: B x M x D floats)."""
        if self.indices is None:
            return self.pool.unsqueeze(0).expand(len(self.anchors), *self.pool.shape)
        return self.pool[self.indices]


def contrastive_loss(pos: torch.Tensor, neg: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE/CNCE.  pos: (B,) similarities of each anchor to its positive; neg: (B, M) to its negatives."""
    logits = torch.cat([pos.unsqueeze(1), neg], dim=1).float() / temperature
    target = torch.zeros(len(logits), dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target)


def infonce(negatives: Negatives, temperature: float) -> torch.Tensor:
    """The InfoNCE/CNCE loss form (NCE, Ring and Ball)."""
    return contrastive_loss(negatives.pos, negatives.logits, temperature)


@dataclass
class Estimator:
    name: str
    sampler: Sampler
    loss: Callable[[Negatives, float], torch.Tensor]


def _infonce_with(sampler: str) -> Callable:
    def build(cfg) -> Estimator:
        return Estimator(cfg.OBJECTIVE.ESTIMATOR, SAMPLER_REGISTRY.get(sampler)(cfg), infonce)
    build.__doc__ = f"InfoNCE over the '{sampler}' sampler's negatives."
    return build


ESTIMATOR_REGISTRY.register(_infonce_with("uniform"), name="nce")
ESTIMATOR_REGISTRY.register(_infonce_with("ring"), name="ring")
ESTIMATOR_REGISTRY.register(_infonce_with("ball"), name="ball")


def build_estimator(cfg) -> Estimator:
    """The estimator that ``OBJECTIVE.ESTIMATOR`` names (an unknown name is one sentence listing them)."""
    est = ESTIMATOR_REGISTRY.get(cfg.OBJECTIVE.ESTIMATOR)(cfg)
    if not isinstance(est, Estimator):
        raise TypeError(f"the estimator builder '{cfg.OBJECTIVE.ESTIMATOR}' returned {type(est).__name__}, "
                        "not an Estimator")
    return est
