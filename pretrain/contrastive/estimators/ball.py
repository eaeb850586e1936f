"""InfoNCE over the ball's negatives: the ring without its inner cut (the top-o candidates)."""
from __future__ import annotations

from pretrain.contrastive.estimators.base import ESTIMATOR_REGISTRY, Estimator, infonce
from pretrain.contrastive.samplers import SAMPLER_REGISTRY

@ESTIMATOR_REGISTRY.register(name="ball")
def build_ball(cfg) -> Estimator:
    return Estimator("ball", SAMPLER_REGISTRY.get("ball")(cfg), infonce)
