"""``hcl``: hard negatives by importance reweighting (Robinson et al. 2021) over uniform negatives, as the
authors' released code computes it (``dcl.debiased_loss`` with beta > 0)."""
from __future__ import annotations

from pretrain.common import UserError
from pretrain.contrastive.estimators.base import ESTIMATOR_REGISTRY, Estimator, tau_plus_of
from pretrain.contrastive.estimators.dcl import debiased_loss
from pretrain.contrastive.samplers import SAMPLER_REGISTRY

# BETA: concentration (negatives weighted by exp(beta * s / tau), normalised by the mean weight); TAU_PLUS as DCL's
HCL_CONFIG = {"HCL": {"BETA": 1.0, "TAU_PLUS": 0.1}}


def hcl_with(sampler: str, name: str):
    """The HCL loss form over the named sampler's negatives (``hcl``: uniform; ``ring_hcl``: the ring)."""
    def build(cfg) -> Estimator:
        tau_plus = tau_plus_of(cfg.HCL.TAU_PLUS, "HCL.TAU_PLUS")
        if cfg.HCL.BETA < 0:
            raise UserError(f"HCL.BETA must be >= 0 (0 is DCL, larger weights hard negatives more), got "
                            f"{cfg.HCL.BETA}; the authors use 1.0.")
        beta = float(cfg.HCL.BETA)
        return Estimator(name, SAMPLER_REGISTRY.get(sampler)(cfg),
                         lambda neg, t: debiased_loss(neg.pos, neg.masked_logits(), t, tau_plus, beta,
                                                       None if neg.valid is None else neg.count()))
    build.__doc__ = f"Hard negatives by importance reweighting over the '{sampler}' sampler's negatives."
    return build


ESTIMATOR_REGISTRY.register(hcl_with("uniform", "hcl"), name="hcl", config=HCL_CONFIG)
