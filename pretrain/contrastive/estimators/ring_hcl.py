"""``ring_hcl``: HCL's reweighting inside the ring, with its own settings (RING_HCL.*).

TAU_PLUS is 0 by default: the debiasing term subtracts tau+ N P on the assumption that a share tau+ of the
negatives are the anchor's class drawn at the class prior, which a ring is not (the ring holds the anchor's
nearest neighbours: a review measured a same-class share near 0.97 in a trained encoder's ring, not 0.1).  At TAU_PLUS 0 the clamp N exp(-1/tau) cannot bind (every
G_j >= exp(-1/tau)), so the temperature only shapes the weights; 0.5, HCL's, keeps BETA's meaning."""
from __future__ import annotations

from pretrain.common import warn_once
from pretrain.contrastive.estimators.base import ESTIMATOR_REGISTRY
from pretrain.contrastive.estimators.hcl import hcl_with


def _check(cfg) -> None:
    if cfg.RING_HCL.TAU_PLUS > 0:
        warn_once(f"ring_hcl: RING_HCL.TAU_PLUS {cfg.RING_HCL.TAU_PLUS} debiases as if the ring's negatives were "
                  "drawn at the class prior; inside a ring they are mostly the anchor's class (set 0, the default).")


ESTIMATOR_REGISTRY.register(hcl_with("ring", "ring_hcl", "RING_HCL", _check, "inside a ring use 0, the default"),
                            name="ring_hcl",
                            config={"RING_HCL": {"BETA": 1.0, "TAU_PLUS": 0.0, "TEMPERATURE": 0.5}})
