"""CNCE: InfoNCE over the ring's negatives (ranks [inner, outer) by similarity to the anchor)."""
from __future__ import annotations

from pretrain.contrastive.estimators.base import ESTIMATOR_REGISTRY, Estimator, infonce
from pretrain.contrastive.samplers import SAMPLER_REGISTRY

@ESTIMATOR_REGISTRY.register(name="ring")
def build_ring(cfg) -> Estimator:
    return Estimator("ring", SAMPLER_REGISTRY.get("ring")(cfg), infonce)
