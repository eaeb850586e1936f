"""Estimators: the one choice a user makes about negatives (``OBJECTIVE.ESTIMATOR``).

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
  N exp(-1 / tau)).  tau+ = 0 is NCE.  Uniform negatives only: the correction assumes negatives drawn
  from the data distribution, so it has no ring version (inside a ring the share of same-class
  negatives is not tau+).
- ``hcl`` (Robinson et al. 2021), as the authors' released code computes it: sum_j G_j becomes
  sum_j w_j G_j with w_j = G_j^beta / mean_k G_k^beta, inside the same debiased form; the weights are
  not detached (the gradient flows through them, as in their code).  beta = 0 is DCL.  ``ring_hcl``
  reweights inside the ring (set HCL.TAU_PLUS 0 there: the debiasing term assumes uniform negatives).
- ``mochi`` (Kalantidis et al. 2020): from each anchor's NUM_HARDEST hardest negatives, NUM_MIX convex
  mixes of two of them and NUM_QUERY_MIX mixes of the anchor with one (anchor weight < 0.5), each
  L2-normalised and appended to the negatives as constants (no gradient through them, the anchor inside
  the query mixes included); then InfoNCE.  ``ring_mochi`` mixes from the ring's hardest members.
All forms are computed with the largest logit factored out (exactly the formulas, without overflow).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from .. import distributed as D
from ..common import Registry, UserError
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
    and ``indices`` (B, M) the selected rows of the pool per anchor (None: every row, in pool order).
    ``valid`` (B, M) bool, when given: only the marked negatives count (a ring whose size is known only on
    the device: ``samplers.py``); every loss form leaves the others out exactly.
    ``generator``: the objective's generator, for a form that draws (identical on every rank)."""

    anchors: torch.Tensor
    pos: torch.Tensor
    logits: torch.Tensor
    pool: torch.Tensor
    indices: torch.Tensor | None
    valid: torch.Tensor | None = None
    generator: torch.Generator | None = None

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


def debiased_loss(pos: torch.Tensor, neg: torch.Tensor, temperature: float, tau_plus: float,
                  beta: float = 0.0, n: int | torch.Tensor | None = None) -> torch.Tensor:
    """DCL (beta = 0) and HCL (beta > 0): -mean log(P / (P + Ng)) with Ng the (reweighted) debiased sum of the
    N negatives' exp-similarities, clamped below at N exp(-1/tau).  pos (B,), neg (B, M): similarities, -inf
    for a left-out negative; ``n``: N, per row (B,) when some are left out (default M)."""
    p, s = pos.float() / temperature, neg.float() / temperature
    n = s.shape[1] if n is None else n.to(s.dtype)
    m = torch.maximum(s.max(dim=1).values, p).detach()  # factored out of every exponential
    g = torch.exp(s - m[:, None])
    # HCL: w_j = G_j^beta / mean_k G_k^beta = N softmax(beta s)_j; the gradient flows through the weights
    neg_sum = n * (torch.softmax(beta * s, dim=1) * g).sum(dim=1) if beta else g.sum(dim=1)
    pos_e = torch.exp(p - m)
    ng = (neg_sum - tau_plus * n * pos_e) / (1.0 - tau_plus)
    ng = torch.clamp(ng, min=n * math.exp(-1.0 / temperature) * torch.exp(-m))
    return (torch.log(pos_e + ng) - (p - m)).mean()


@dataclass
class MochiDraws:
    """Which hard negatives MoCHi mixes, per anchor: ``hard`` (B, k) the columns of the k most similar
    negatives, in column order (an unsorted top-k: the order within the k does not change the draws'
    distribution; with ``Negatives.valid``, most similar first); pair mixes ``alpha * h[i] + (1 - alpha) * h[j]`` (B, s); query mixes
    ``beta * q + (1 - beta) * h[jq]`` (B, s'), beta < 0.5.  Positions i, j, jq index ``hard``."""

    hard: torch.Tensor
    i: torch.Tensor
    j: torch.Tensor
    alpha: torch.Tensor
    jq: torch.Tensor
    beta: torch.Tensor


def draw_mochi(negatives: Negatives, num_hardest: int, num_mix: int, num_query_mix: int) -> MochiDraws:
    """MoCHi's draws, in the order i, j, alpha, jq, beta, for the global batch from the objective's generator
    (this rank's rows taken): the same on every rank and after a resume.  With ``negatives.valid`` (a ring
    sized on the device) the hard negatives come from the valid ones, most similar first, and a row whose
    ring holds fewer than k draws among the ones it has (float64 uniforms instead of integers)."""
    with torch.no_grad():
        b, m = negatives.logits.shape
        k = min(num_hardest, m)
        g = negatives.generator
        dev = g.device if g is not None else negatives.logits.device
        off, total = D.get_rank() * b, D.get_world_size() * b
        if negatives.valid is None:
            hard = negatives.logits.detach().topk(k, dim=1, sorted=False).indices.sort(dim=1).values
            available = None
        else:
            hard = negatives.masked_logits().detach().topk(k, dim=1).indices  # the valid ones first
            available = negatives.count().clamp_max(k).unsqueeze(1)

        def picks(count):  # (B, count) positions among the k hardest
            if available is None:
                return torch.randint(k, (total, count), generator=g, device=dev)[off:off + b].to(hard.device)
            u = torch.rand((total, count), generator=g, device=dev, dtype=torch.float64)[off:off + b]
            return (u.to(hard.device) * available).long().clamp_max(available - 1)

        def weights(count, high):  # (B, count) uniform in [0, high)
            return high * torch.rand((total, count), generator=g, device=dev)[off:off + b].to(hard.device)

        i, j = picks(num_mix), picks(num_mix)
        alpha = weights(num_mix, 1.0)
        jq = picks(num_query_mix)
        return MochiDraws(hard, i, j, alpha, jq, weights(num_query_mix, 0.5))


def _pool_rows(negatives: Negatives, columns: torch.Tensor) -> torch.Tensor:
    """Rows of the pool behind the given logit columns (B, n)."""
    return columns if negatives.indices is None else negatives.indices.gather(1, columns)


def gathered_dots(pool: torch.Tensor, rows_a: torch.Tensor, rows_b: torch.Tensor | None = None,
                  block: int = 8) -> tuple[torch.Tensor, ...]:
    """(|p_a|^2, |p_b|^2, p_a . p_b) for the pool rows ``rows_a``, ``rows_b`` (B, n), each (B, n); without
    ``rows_b``, (|p_a|^2,) alone.  On the CPU, ``block`` anchors at a time into reused buffers that stay in
    cache (14 ms against ~100 ms for two (64, 1024, 128) gathers and their products, one thread, measured
    once); on a GPU in one go."""
    b, n = rows_a.shape
    block = b if pool.device.type == "cuda" else block
    count = 1 if rows_b is None else 3
    out = torch.empty(count, b, n, device=pool.device, dtype=pool.dtype)
    xa = pool.new_empty(min(block, b) * n, pool.shape[1])
    xb = torch.empty_like(xa) if rows_b is not None else None
    for s in range(0, b, block):
        rows = min(block, b - s)
        ya = torch.index_select(pool, 0, rows_a[s:s + rows].reshape(-1), out=xa[:rows * n])
        pairs = [(ya, ya)]
        if rows_b is not None:
            yb = torch.index_select(pool, 0, rows_b[s:s + rows].reshape(-1), out=xb[:rows * n])
            pairs += [(yb, yb), (ya, yb)]
        for k, (x, y) in enumerate(pairs):
            out[k, s:s + rows] = torch.einsum("nd,nd->n", x, y).view(rows, n)
    return tuple(out)


def mochi_logits(negatives: Negatives, draws: MochiDraws) -> torch.Tensor:
    """(B, s + s') similarities q . m of each anchor to its synthetic negatives m, with the gradient of
    q . stopgrad(m), in closed form from the similarities already computed:
    q . (a h_i + (1 - a) h_j) / |a h_i + (1 - a) h_j| = (a s_i + (1 - a) s_j) / |...|, where
    |...|^2 = a^2 |h_i|^2 + (1 - a)^2 |h_j|^2 + 2 a (1 - a) h_i . h_j; the query mixes likewise with q for
    h_i.  Only h_i . h_j and the norms read embeddings: no (B, s, D) mix, normalisation or product with q
    is built (MoCo at K = 65,536: README, "Step time of every estimator"); tests/test_estimator_family.py
    checks it against the mixes materialised."""
    q = negatives.anchors.float()
    s = negatives.logits.float()
    if negatives.pool.requires_grad:  # SimCLR's in-batch pool: the mixes' gradient must reach q only
        sims = q @ negatives.pool.detach().float().t()
        s = sims if negatives.indices is None else sims.gather(1, negatives.indices)
    ci, cj, cq = (draws.hard.gather(1, p) for p in (draws.i, draws.j, draws.jq))
    with torch.no_grad():
        pool = negatives.pool.detach().float()
        a, b = draws.alpha, draws.beta
        ii, jj, ij = gathered_dots(pool, _pool_rows(negatives, ci), _pool_rows(negatives, cj))
        pair_norm = (a * a * ii + (1 - a) ** 2 * jj + 2 * a * (1 - a) * ij).clamp_min(0).sqrt().clamp_min(1e-12)
        (hh,) = gathered_dots(pool, _pool_rows(negatives, cq))
        qq, sq = (q.detach() ** 2).sum(1, keepdim=True), s.detach().gather(1, cq)
        q_norm = (b * b * qq + (1 - b) ** 2 * hh + 2 * b * (1 - b) * sq).clamp_min(0).sqrt().clamp_min(1e-12)
    q_self = (q * q.detach()).sum(1, keepdim=True)  # q . stopgrad(q): |q|^2, gradient stopgrad(q)
    pair = (a * s.gather(1, ci) + (1 - a) * s.gather(1, cj)) / pair_norm
    query = (b * q_self + (1 - b) * s.gather(1, cq)) / q_norm
    return torch.cat([pair, query], dim=1)


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


def _tau_plus(value: float, key: str) -> float:
    if not 0.0 <= value < 1.0:
        raise UserError(f"{key} must lie in [0, 1) (the probability that a negative shares the anchor's class), "
                        f"got {value}; the authors use 0.1.")
    return float(value)


@ESTIMATOR_REGISTRY.register(name="dcl")
def build_dcl(cfg) -> Estimator:
    """Debiased contrastive loss over uniform negatives (DCL.TAU_PLUS)."""
    tau_plus = _tau_plus(cfg.DCL.TAU_PLUS, "DCL.TAU_PLUS")
    return Estimator("dcl", SAMPLER_REGISTRY.get("uniform")(cfg),
                     lambda neg, t: debiased_loss(neg.pos, neg.logits, t, tau_plus))  # never masked: uniform


def _hcl_with(sampler: str) -> Callable:
    def build(cfg) -> Estimator:
        tau_plus = _tau_plus(cfg.HCL.TAU_PLUS, "HCL.TAU_PLUS")
        if cfg.HCL.BETA < 0:
            raise UserError(f"HCL.BETA must be >= 0 (0 is DCL, larger weights hard negatives more), got "
                            f"{cfg.HCL.BETA}; the authors use 1.0.")
        beta = float(cfg.HCL.BETA)
        return Estimator(cfg.OBJECTIVE.ESTIMATOR, SAMPLER_REGISTRY.get(sampler)(cfg),
                         lambda neg, t: debiased_loss(neg.pos, neg.masked_logits(), t, tau_plus, beta,
                                                       None if neg.valid is None else neg.count()))
    build.__doc__ = f"Hard negatives by importance reweighting over the '{sampler}' sampler's negatives."
    return build


ESTIMATOR_REGISTRY.register(_hcl_with("uniform"), name="hcl")
ESTIMATOR_REGISTRY.register(_hcl_with("ring"), name="ring_hcl")


def _mochi_with(sampler: str) -> Callable:
    def build(cfg) -> Estimator:
        M = cfg.MOCHI
        if M.NUM_HARDEST < 1 or M.NUM_MIX < 0 or M.NUM_QUERY_MIX < 0:
            raise UserError(f"MOCHI.NUM_HARDEST must be >= 1 and MOCHI.NUM_MIX, MOCHI.NUM_QUERY_MIX >= 0, got "
                            f"{M.NUM_HARDEST}, {M.NUM_MIX}, {M.NUM_QUERY_MIX}.")
        n, s, s2 = int(M.NUM_HARDEST), int(M.NUM_MIX), int(M.NUM_QUERY_MIX)

        def loss(neg: Negatives, t: float) -> torch.Tensor:
            extra = mochi_logits(neg, draw_mochi(neg, n, s, s2))  # gradient into the anchor only
            return contrastive_loss(neg.pos, torch.cat([neg.masked_logits().float(), extra], dim=1), t)
        return Estimator(cfg.OBJECTIVE.ESTIMATOR, SAMPLER_REGISTRY.get(sampler)(cfg), loss)
    build.__doc__ = f"Hard negative mixing over the '{sampler}' sampler's negatives."
    return build


ESTIMATOR_REGISTRY.register(_mochi_with("uniform"), name="mochi")
ESTIMATOR_REGISTRY.register(_mochi_with("ring"), name="ring_mochi")


def build_estimator(cfg) -> Estimator:
    """The estimator that ``OBJECTIVE.ESTIMATOR`` names (an unknown name is one sentence listing them)."""
    est = ESTIMATOR_REGISTRY.get(cfg.OBJECTIVE.ESTIMATOR)(cfg)
    if not isinstance(est, Estimator):
        raise TypeError(f"the estimator builder '{cfg.OBJECTIVE.ESTIMATOR}' returned {type(est).__name__}, "
                        "not an Estimator")
    return est
