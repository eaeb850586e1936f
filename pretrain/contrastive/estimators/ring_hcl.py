"""``ring_hcl``: HCL's reweighting inside the ring (set HCL.TAU_PLUS 0 there: the debiasing term assumes
uniform negatives)."""
from __future__ import annotations

from pretrain.contrastive.estimators.base import ESTIMATOR_REGISTRY
from pretrain.contrastive.estimators.hcl import HCL_CONFIG, hcl_with

ESTIMATOR_REGISTRY.register(hcl_with("ring", "ring_hcl"), name="ring_hcl", config=HCL_CONFIG)
