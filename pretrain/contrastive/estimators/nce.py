"""InfoNCE over uniform negatives (the plain NCE of the paper)."""
from __future__ import annotations

from pretrain.contrastive.estimators.base import ESTIMATOR_REGISTRY, Estimator, infonce
from pretrain.contrastive.samplers import SAMPLER_REGISTRY

@ESTIMATOR_REGISTRY.register(name="nce")
def build_nce(cfg) -> Estimator:
    return Estimator("nce", SAMPLER_REGISTRY.get("uniform")(cfg), infonce)
