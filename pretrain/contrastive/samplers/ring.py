"""``ring`` (CNCE): per anchor, the candidates whose similarity rank lies in ``[inner, outer)``, with
``outer = floor(o * N)`` (o from the ring's schedule) and ``inner = floor(RING.INNER * outer)``."""
from __future__ import annotations

import torch

from pretrain.common import UserError
from pretrain.contrastive.samplers.base import (SAMPLER_REGISTRY, Sampler, ring_bounds, ring_bounds_on_device,
                                                ring_indices, uniform_draws, uniform_ranks)


class RingSampler(Sampler):
    conditional = True

    def __init__(self, inner: float):
        if not 0.0 <= inner < 1.0:
            raise UserError(f"RING.INNER must lie in [0, 1), got {inner}; set it to a fraction such as 0.1.")
        self.inner = inner

    def select(self, candidates, outer=1.0, num_draws=None, generator=None, rows=None):
        if isinstance(outer, torch.Tensor):
            return self.select_on_device(candidates, outer, num_draws, generator, rows)
        inner_n, outer_n = ring_bounds(candidates.size, outer, self.inner)
        picks = None if num_draws is None else uniform_draws(outer_n - inner_n, candidates.num_rows, num_draws,
                                                             candidates.device, generator, rows)
        out = []
        for r0, scores in candidates.blocks():
            idx = ring_indices(scores, outer, self.inner)
            out.append(idx if picks is None else idx.gather(1, picks[r0:r0 + len(scores)]))
        return out[0] if len(out) == 1 else torch.cat(out)

    def select_on_device(self, candidates, outer, num_draws=None, generator=None, rows=None):
        """The ring for a 0-dim tensor o, in fixed shapes (a full sort per row instead of two partial
        selections): the draws' indices, or without draws the (B, N) mask of the ring's members."""
        n = candidates.size
        inner_n, outer_n = ring_bounds_on_device(n, outer.to(candidates.device), self.inner)
        if num_draws is not None:
            picks = uniform_ranks(inner_n, outer_n, candidates.num_rows, num_draws, candidates.device, generator,
                                  rows)
        else:
            ranks = torch.arange(n, device=candidates.device)
            in_ring = (ranks >= inner_n) & (ranks < outer_n)  # by rank
        out = []
        for r0, scores in candidates.blocks():
            order = scores.argsort(dim=1, descending=True)
            if num_draws is not None:
                out.append(order.gather(1, picks[r0:r0 + len(scores)]))
            else:  # back from ranks to the candidates' columns
                out.append(torch.zeros_like(scores, dtype=torch.bool).scatter_(1, order, in_ring.expand_as(order)))
        return out[0] if len(out) == 1 else torch.cat(out)


# iota: the inner fraction of the outer set dropped as too hard (the authors' default)
@SAMPLER_REGISTRY.register(name="ring", config={"RING": {"INNER": 0.1}})
def build_ring(cfg) -> Sampler:
    return RingSampler(cfg.RING.INNER)
