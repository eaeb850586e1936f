"""What every negative sampler shares: ``Candidates`` (scores in blocks), the ``Sampler`` base, ring arithmetic
and the rank-identical random draws.  One file per sampler beside this one registers it (``uniform.py``,
``ring.py``, ``ball.py``).

A sampler sees one thing, a ``Candidates``: B anchors against N candidates, whose similarity scores
come in blocks of anchor rows.  An in-memory pool (MoCo's queue, SimCLR's batch) is one block of
scores computed by the objective; a memory bank (IR, CMC; up to 1.28M entries) is scored block by
block of anchors, so memory stays bounded.  The sampler never knows which objective calls it, so one
registered once serves IR, CMC, MoCo and SimCLR.

- ``uniform`` (plain NCE): every candidate, or ``num_draws`` drawn uniformly with replacement; it never
  reads a score.
- ``ring`` (CNCE): per anchor, rank the N candidates by similarity (descending) and keep ranks
  ``[inner, outer)`` with ``outer = floor(o * N)`` and ``inner = floor(iota * outer)``; with
  ``num_draws`` (IR, CMC) that many are drawn uniformly with replacement from the ring, otherwise
  (MoCo, SimCLR) every ring member is used.
- ``ball``: the ring with ``iota = 0`` (all of the top-``o`` candidates).

Selection is partial (top-k of the outer set, then top-k of the inner set inside it), never a full sort,
when o is a host float (every schedule but ``adaptive``).  When o is a 0-dim tensor on the device (the
``adaptive`` schedule, which moves o with the loss without reading it on the host), the ring's size is
not known on the host, so the selection keeps fixed shapes: each row is sorted, the ring's ranks are
compared with bounds computed on the device, and the result is either the draws (IR, CMC: ranks drawn
uniformly in [inner, outer)) or a boolean mask over the candidates (MoCo, SimCLR: the loss forms leave
out what the mask excludes).  Both forms select the same ring.
Degenerate sizes: ``outer`` is clamped to [1, N] (o * N < 1 keeps the single most similar candidate)
and ``inner`` to at most ``outer - 1``, so the ring always holds at least one candidate.  Ties at the
ring's edges are broken arbitrarily; the selected *scores* are always exactly those at ranks
[inner, outer) of a descending sort.
"""
from __future__ import annotations

import math
from typing import Callable, Iterator

import torch

from pretrain.common import Registry, UserError

SAMPLER_REGISTRY = Registry("SAMPLER", key="sampler", doc="""Negative samplers.

A member is a builder ``fn(cfg) -> Sampler`` called with the whole resolved config.  The sampler's
``select(candidates, outer, num_draws=None, generator=None, rows=None)`` returns a LongTensor (B, M) of
candidate indices per anchor row, None for "every candidate", or, when ``outer`` is a device tensor and
no draws are asked for, a BoolTensor (B, N) that marks the selected candidates.  It runs under ``torch.no_grad`` and
may read ``candidates.blocks()`` (scores, in blocks of rows) any number of times.  Random draws use
``uniform_draws`` so that they are the same on every rank and after a resume.  Users choose samplers
through an estimator (``ESTIMATOR_REGISTRY``), never directly.""")


def ring_bounds(n: int, outer_frac: float, inner_frac: float) -> tuple[int, int]:
    """(inner, outer) ranks of the ring over n candidates, clamped so that 0 <= inner < outer <= n."""
    if n < 1:
        raise UserError("the pool of candidate negatives is empty; check the queue, bank or batch size.")
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
    return idx.gather(1, kept_positions(keep, outer - inner))


def ring_bounds_on_device(n: int, outer_frac: torch.Tensor, inner_frac: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``ring_bounds`` with a 0-dim float64 tensor o: (inner, outer) as 0-dim long tensors on its device,
    by the same float64 arithmetic (the same ranks as the host for the same o)."""
    if n < 1:
        raise UserError("the pool of candidate negatives is empty; check the queue, bank or batch size.")
    outer = torch.floor(outer_frac.double() * n + 1e-9).clamp(1, n).long()
    inner = torch.minimum(torch.floor(inner_frac * outer.double() + 1e-9).long().clamp_min(0), outer - 1)
    return inner, outer


def uniform_ranks(low: torch.Tensor, high: torch.Tensor, num_rows: int, k: int, device,
                  generator: torch.Generator | None, rows: tuple[int, int] | None = None) -> torch.Tensor:
    """(num_rows, k) integers uniform in [low, high), with replacement, for 0-dim device tensors low < high:
    ``uniform_draws`` without the bound on the host (float64 uniforms, floored)."""
    offset, total = rows or (0, num_rows)
    dev = generator.device if generator is not None else device
    u = torch.rand((total, k), generator=generator, device=dev, dtype=torch.float64)[offset:offset + num_rows]
    size = (high - low).to(device)
    return low.to(device) + (u.to(device) * size).long().clamp_max(size - 1)


def kept_positions(keep: torch.Tensor, count: int) -> torch.Tensor:
    """(B, count) column positions of the True entries of each row of ``keep``, in column order: what
    ``x[keep].view(B, count)`` selects, without boolean-mask indexing (a host sync on CUDA).  Every row must
    hold exactly ``count`` True entries."""
    return keep.to(torch.uint8).argsort(dim=1, descending=True, stable=True)[:, :count]


class Candidates:
    """B anchors against N candidates; ``blocks()`` yields ``(first_row, scores (rows, N))``.

    ``from_scores`` wraps a score matrix that already exists (one block); ``from_bank`` scores a bank
    (N, D) against the anchors (B, D) ``max(1, score_block // N)`` rows at a time, so the largest score
    block holds about ``score_block`` floats instead of B x N."""

    def __init__(self, num_rows: int, size: int, device: torch.device,
                 blocks: Callable[[], Iterator[tuple[int, torch.Tensor]]]):
        self.num_rows, self.size, self.device, self._blocks = num_rows, size, device, blocks

    @classmethod
    def from_scores(cls, scores: torch.Tensor) -> "Candidates":
        return cls(scores.shape[0], scores.shape[1], scores.device, lambda: iter([(0, scores)]))

    @classmethod
    def from_bank(cls, anchors: torch.Tensor, bank: torch.Tensor, score_block: int) -> "Candidates":
        step = max(1, score_block // len(bank))

        def blocks():
            for r0 in range(0, len(anchors), step):
                yield r0, anchors[r0:r0 + step] @ bank.t()
        return cls(len(anchors), len(bank), anchors.device, blocks)

    def blocks(self) -> Iterator[tuple[int, torch.Tensor]]:
        return self._blocks()


def uniform_draws(pool_size: int, num_rows: int, k: int, device, generator: torch.Generator | None,
                  rows: tuple[int, int] | None = None) -> torch.Tensor:
    """(num_rows, k) indices uniform in [0, pool_size), with replacement.

    ``rows = (offset, total)``: under DDP the draws are made for all ``total`` rows of the global batch
    from a generator that is identical on every rank, and this rank takes rows [offset, offset + B):
    the generator's state stays the same everywhere, which is what exact resumption needs."""
    offset, total = rows or (0, num_rows)
    dev = generator.device if generator is not None else device
    return torch.randint(pool_size, (total, k), device=dev, generator=generator)[offset:offset + num_rows].to(device)


class Sampler:
    """Base class; see ``SAMPLER_REGISTRY`` for the contract.  ``conditional``: the selection depends on
    the scores and on the ring's outer fraction (the engine then logs that fraction)."""

    conditional = False

    def select(self, candidates: Candidates, outer: float = 1.0, num_draws: int | None = None,
               generator: torch.Generator | None = None, rows: tuple[int, int] | None = None):
        raise NotImplementedError
