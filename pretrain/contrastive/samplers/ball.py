"""``ball``: the ring with no inner cut, all of the top-``o`` candidates (iota = 0)."""
from __future__ import annotations

from pretrain.contrastive.samplers.base import SAMPLER_REGISTRY, Sampler
from pretrain.contrastive.samplers.ring import RingSampler


@SAMPLER_REGISTRY.register(name="ball")
def build_ball(cfg) -> Sampler:
    return RingSampler(0.0)
