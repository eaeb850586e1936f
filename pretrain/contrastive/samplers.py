"""Negative samplers: filters over any pool of candidates, chosen by name.

- ``uniform`` (plain NCE): every candidate, or ``num_draws`` drawn uniformly with replacement.
- ``ring`` (CNCE): per anchor, rank the N candidates by similarity (descending) and keep ranks
  ``[inner, outer)`` with ``outer = floor(o * N)`` and ``inner = floor(iota * outer)``; IR then draws
  ``num_draws`` uniformly with replacement from the ring, MoCo/SimCLR use every ring entry.
- ``ball``: the ring with ``iota = 0`` (all of the top-``o`` candidates).

Selection is partial (top-k of the outer set, then top-k of the inner set inside it), never a full sort.
Degenerate sizes: ``outer`` is clamped to [1, N] (o * N < 1 keeps the single most similar candidate)
and ``inner`` to at most ``outer - 1``, so the ring always holds at least one candidate.  Ties at the
ring's edges are broken arbitrarily; the selected *scores* are always exactly those at ranks
[inner, outer) of a descending sort.
"""
from __future__ import annotations

import math
from typing import Callable

import torch


def ring_bounds(n: int, outer_frac: float, inner_frac: float) -> tuple[int, int]:
    """(inner, outer) ranks of the ring over n candidates, clamped so that 0 <= inner < outer <= n."""
    if n < 1:
        raise ValueError("the pool of candidate negatives is empty")
    outer = min(n, max(1, math.floor(outer_frac * n + 1e-9)))
    inner = min(outer - 1, max(0, math.floor(inner_frac * outer + 1e-9)))
    return inner, outer


def ring_indices(scores: torch.Tensor, outer_frac: float, inner_frac: float) -> torch.Tensor:
    """(B, outer - inner) indices into the candidates whose rank per row lies in [inner, outer)."""
    b, n = scores.shape
    inner, outer = ring_bounds(n, outer_frac, inner_frac)
    if outer == n and inner == 0:
        return torch.arange(n, device=scores.device).expand(b, n)
    vals, idx = scores.topk(outer, dim=1, sorted=False)
    if inner == 0:
        return idx
    # Drop the `inner` hardest candidates of the outer set: a second, smaller partial selection.
    _, drop = vals.topk(inner, dim=1, sorted=False)
    keep = torch.ones_like(vals, dtype=torch.bool).scatter_(1, drop, False)
    return idx[keep].view(b, outer - inner)


class Sampler:
    """Base: ``__call__(scores, outer, num_draws, generator, rows)`` -> (B, M) candidate indices, or None for all.

    ``rows = (offset, total)``: under DDP the draws are made for all ``total`` rows of the global batch
    from a generator that is identical on every rank, and this rank takes rows [offset, offset + B):
    the generator's state stays the same everywhere, which is what exact resumption needs."""

    conditional = False

    def __call__(self, scores: torch.Tensor, outer: float = 1.0, num_draws: int | None = None,
                 generator: torch.Generator | None = None, rows: tuple[int, int] | None = None):
        raise NotImplementedError


def _draw(pool_size: int, b: int, k: int, device, generator, rows) -> torch.Tensor:
    offset, total = rows or (0, b)
    dev = generator.device if generator is not None else device
    return torch.randint(pool_size, (total, k), device=dev, generator=generator)[offset:offset + b].to(device)


class UniformSampler(Sampler):
    def __call__(self, scores, outer=1.0, num_draws=None, generator=None, rows=None):
        if num_draws is None:
            return None
        return _draw(scores.shape[1], scores.shape[0], num_draws, scores.device, generator, rows)


class RingSampler(Sampler):
    conditional = True

    def __init__(self, inner: float):
        if not 0.0 <= inner < 1.0:
            raise ValueError(f"RING.INNER must lie in [0, 1), got {inner}")
        self.inner = inner

    def __call__(self, scores, outer=1.0, num_draws=None, generator=None, rows=None):
        idx = ring_indices(scores, outer, self.inner)
        if num_draws is None:
            return idx
        return idx.gather(1, _draw(idx.shape[1], idx.shape[0], num_draws, scores.device, generator, rows))


def ring_indices_chunked(z: torch.Tensor, bank: torch.Tensor, outer_frac: float, inner_frac: float,
                         score_block: int = 2 ** 25, num_draws: int | None = None,
                         generator: torch.Generator | None = None, rows=None) -> torch.Tensor:
    """The ring of each anchor z_i over a large bank (N, D), memory-bounded and exact.

    Anchors are processed in blocks of ``max(1, score_block // N)`` rows: each block scores the whole
    bank and takes its partial top-k, so peak extra memory is one block's scores (``score_block``
    floats) instead of B x N, and no cross-chunk merging is needed (chunking the bank instead would
    re-select the running top-k once per chunk).  With ``num_draws`` the result equals
    ``RingSampler(inner)(z @ bank.T, outer, num_draws, generator, rows)`` draw for draw."""
    b, n = len(z), len(bank)
    inner, outer = ring_bounds(n, outer_frac, inner_frac)
    pos = None if num_draws is None else _draw(outer - inner, b, num_draws, z.device, generator, rows)
    step = max(1, score_block // n)
    out = []
    for r0 in range(0, b, step):
        idx = ring_indices(z[r0:r0 + step] @ bank.t(), outer_frac, inner_frac)
        out.append(idx if pos is None else idx.gather(1, pos[r0:r0 + step]))
    return torch.cat(out)


SAMPLERS: dict[str, Callable[[object], Sampler]] = {
    "nce": lambda ring_cfg: UniformSampler(),
    "ring": lambda ring_cfg: RingSampler(ring_cfg.INNER),
    "ball": lambda ring_cfg: RingSampler(0.0),
}


def build_sampler(estimator: str, ring_cfg) -> Sampler:
    if estimator not in SAMPLERS:
        raise ValueError(f"OBJECTIVE.ESTIMATOR '{estimator}' is unknown; choose one of: {', '.join(SAMPLERS)}.")
    return SAMPLERS[estimator](ring_cfg)
