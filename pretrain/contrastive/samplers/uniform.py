"""``uniform`` (plain NCE): every candidate, or ``num_draws`` drawn uniformly with replacement; never reads a score."""
from __future__ import annotations

from pretrain.contrastive.samplers.base import SAMPLER_REGISTRY, Sampler, uniform_draws


class UniformSampler(Sampler):
    def select(self, candidates, outer=1.0, num_draws=None, generator=None, rows=None):
        if num_draws is None:
            return None
        return uniform_draws(candidates.size, candidates.num_rows, num_draws, candidates.device, generator, rows)


@SAMPLER_REGISTRY.register(name="uniform")
def build_uniform(cfg) -> Sampler:
    return UniformSampler()
