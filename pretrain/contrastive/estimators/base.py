"""Estimators: the one choice a user makes about negatives (``OBJECTIVE.ESTIMATOR``); this file holds what they
share (``Negatives``, ``Estimator``, the InfoNCE form, the registry), one file per estimator beside it.

An estimator is a negative sampler (which candidates, ``samplers.py``) plus a loss form (how the
selected negatives enter the loss).  ``nce``, ``ring`` and ``ball`` share the InfoNCE/CNCE form and
differ only in their sampler:

    loss = -mean_i( s_pos_i - logsumexp([s_pos_i, s_neg_i1, ..., s_neg_ik]) ),  s = similarity / tau,

with the positive in the denominator (cross-entropy on the logits).  A loss form receives a
``Negatives``, which also carries the pool and the selected indices, so a form that needs the negatives'
embeddings (MoCHi mixes new negatives from them) can read them without the objective knowing.

The rest of the family, on the same negatives (N of them per anchor: the queue, the batch's 2B - 2, or
the k - 1 drawn from a bank), with P = exp(s_pos) and G_j = exp(s_neg_j):
- ``dcl`` (Chuang et al. 2020): loss = -log(P / (P + Ng)), Ng = max((sum_j G_j - tau+ N P) / (1 - tau+),
  N exp(-1 / tau)).  tau+ = 0 is NCE.  The clamp binds for an anchor whose sum_j G_j - tau+ N P falls below
  (1 - tau+) N exp(-1 / tau); where exp(-1 / tau) is negligible (tau 0.07) that is every anchor whose InfoNCE
  loss is below log(1 + tau+ N) (6.0 nats at N = 4096), and a clamped anchor's negatives get no gradient.
  So the debiased forms run at their own temperature (DCL.TEMPERATURE, HCL.TEMPERATURE: the released
  code's 0.5, not the objective's 0.07) and report the clamped fraction (``clamped``) as a training metric.  Uniform negatives only: the correction assumes negatives drawn
  from the data distribution, so it has no ring version (inside a ring the share of same-class
  negatives is not tau+).
- ``hcl`` (Robinson et al. 2021), as the authors' released code computes it: sum_j G_j becomes
  sum_j w_j G_j with w_j = G_j^beta / mean_k G_k^beta, inside the same debiased form; the weights are
  not detached (the gradient flows through them, as in their code).  beta = 0 is DCL.  ``ring_hcl``
  reweights inside the ring with its own settings (RING_HCL.*: TAU_PLUS 0 by default, since inside the
  ring the share of same-class negatives is nowhere near a class prior).
- ``mochi`` (Kalantidis et al. 2020): from each anchor's NUM_HARDEST hardest negatives, NUM_MIX convex
  mixes of two of them and NUM_QUERY_MIX mixes of the anchor with one (anchor weight < 0.5), each
  L2-normalised and appended to the negatives as constants (no gradient through them, the anchor inside
  the query mixes included); then InfoNCE.  ``ring_mochi`` mixes from the ring's hardest members, with
  counts that are fractions of the ring's size and only the mixes that stay inside the ring's band
  (``ring_mochi.py``).
All forms are computed with the largest logit factored out (exactly the formulas, without overflow).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from pretrain.common import Registry, UserError
from pretrain.contrastive.samplers import Sampler

ESTIMATOR_REGISTRY = Registry("ESTIMATOR", key="OBJECTIVE.ESTIMATOR", doc="""Estimators (OBJECTIVE.ESTIMATOR).

A member is a builder ``fn(cfg) -> Estimator``: a ``Sampler`` (which negatives) and a loss form
``loss(negatives: Negatives, temperature: float) -> scalar tensor``.  Every objective (IR, CMC, MoCo,
SimCLR) calls the sampler on its pool and the loss on what was selected, so an estimator registered
once works for all four.  A member declares its own settings where it registers (``register(config=...)``);
``transfer/results.py`` pairs every estimator with NCE over those settings.""",
                              config={"OBJECTIVE": {"ESTIMATOR": "nce"}})


@dataclass
class Negatives:
    """What a loss form sees for B anchors.

    ``pos`` (B,) and ``logits`` (B, M) are similarities (not yet divided by the temperature), with
    gradients; ``anchors`` (B, D) are the anchors' embeddings; ``pool`` (N, D) the candidates' embeddings
    and ``indices`` (B, M) the selected rows of the pool per anchor (None: every row, in pool order).
    ``valid`` (B, M) bool, when given: only the marked negatives count (a ring whose size is known only on
    the device: ``samplers.py``); every loss form leaves the others out exactly.
    ``generator``: the objective's generator, for a form that draws (identical on every rank).
    ``stats``: what the loss form reports about this step (device tensors, e.g. DCL's clamped fraction);
    the engine logs them with the step's other metrics."""

    anchors: torch.Tensor
    pos: torch.Tensor
    logits: torch.Tensor
    pool: torch.Tensor
    indices: torch.Tensor | None
    valid: torch.Tensor | None = None
    generator: torch.Generator | None = None
    stats: dict = field(default_factory=dict)

    def masked_logits(self) -> torch.Tensor:
        """The logits with -inf where ``valid`` is False: exp() of those is 0, so a sum or softmax over the
        row is the one over the valid negatives alone, and no gradient reaches them."""
        return self.logits if self.valid is None else self.logits.masked_fill(~self.valid, float("-inf"))

    def count(self) -> int | torch.Tensor:
        """Negatives per anchor: M, or (B,) counts of the valid ones (a device tensor)."""
        return self.logits.shape[1] if self.valid is None else self.valid.sum(dim=1)

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
    return contrastive_loss(negatives.pos, negatives.masked_logits(), temperature)


@dataclass
class Estimator:
    """A sampler and a loss form; ``temperature``, when set, is the one the loss form is meant for (the
    debiased forms' own setting), used in place of OBJECTIVE.TEMPERATURE; ``warn``, when set, reads the
    logged step metrics (host floats) and returns a warning to print once per run, or None."""
    name: str
    sampler: Sampler
    loss: Callable[[Negatives, float], torch.Tensor]
    temperature: float | None = None
    warn: Callable[[dict], str | None] | None = None


def tau_plus_of(value: float, key: str, usual: str = "the authors use 0.1") -> float:
    if not 0.0 <= value < 1.0:
        raise UserError(f"{key} must lie in [0, 1) (the probability that a negative shares the anchor's class), "
                        f"got {value}; {usual}.")
    return float(value)


def own_temperature(value: float, key: str) -> float | None:
    """An estimator's own temperature setting: None for 0 (OBJECTIVE.TEMPERATURE applies), else the value."""
    if value < 0:
        raise UserError(f"{key} must be > 0 (or 0 for OBJECTIVE.TEMPERATURE), got {value}; the authors use 0.5.")
    return float(value) or None


def build_estimator(cfg) -> Estimator:
    """The estimator that ``OBJECTIVE.ESTIMATOR`` names (an unknown name is one sentence listing them)."""
    est = ESTIMATOR_REGISTRY.get(cfg.OBJECTIVE.ESTIMATOR)(cfg)
    if not isinstance(est, Estimator):
        raise TypeError(f"the estimator builder '{cfg.OBJECTIVE.ESTIMATOR}' returned {type(est).__name__}, "
                        "not an Estimator")
    return est
