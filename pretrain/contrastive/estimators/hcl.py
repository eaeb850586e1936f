"""``hcl``: hard negatives by importance reweighting (Robinson et al. 2021) over uniform negatives, as the
authors' released code computes it (``dcl.debiased_loss`` with beta > 0)."""
from __future__ import annotations

from pretrain.common import UserError
from pretrain.contrastive.estimators.base import ESTIMATOR_REGISTRY, Estimator, own_temperature, tau_plus_of
from pretrain.contrastive.estimators.dcl import clamp_warning, debiased_loss
from pretrain.contrastive.samplers import SAMPLER_REGISTRY

# BETA: concentration (negatives weighted by exp(beta * s / tau), normalised by the mean weight); TAU_PLUS and
# TEMPERATURE as DCL's.  The released code's (joshr17/HCL): 1.0, 0.1, 0.5.
HCL_CONFIG = {"HCL": {"BETA": 1.0, "TAU_PLUS": 0.1, "TEMPERATURE": 0.5}}


def hcl_with(sampler: str, name: str, section: str = "HCL", check=None, usual_tau_plus: str = "the authors use 0.1"):
    """The HCL loss form over the named sampler's negatives, with the settings of config ``section``
    (``hcl``: uniform, HCL; ``ring_hcl``: the ring, RING_HCL); ``check(cfg)`` vets them further."""
    def build(cfg) -> Estimator:
        S = cfg[section]
        tau_plus = tau_plus_of(S.TAU_PLUS, f"{section}.TAU_PLUS", usual_tau_plus)
        if check is not None:
            check(cfg)
        if S.BETA < 0:
            raise UserError(f"{section}.BETA must be >= 0 (0 is DCL, larger weights hard negatives more), got "
                            f"{S.BETA}; the authors use 1.0.")
        beta = float(S.BETA)
        return Estimator(name, SAMPLER_REGISTRY.get(sampler)(cfg),
                         lambda neg, t: debiased_loss(neg.pos, neg.masked_logits(), t, tau_plus, beta,
                                                       None if neg.valid is None else neg.count(), stats=neg.stats),
                         temperature=own_temperature(S.TEMPERATURE, f"{section}.TEMPERATURE"),
                         warn=clamp_warning(name, section))
    build.__doc__ = f"Hard negatives by importance reweighting over the '{sampler}' sampler's negatives ({section}.*)."
    return build


ESTIMATOR_REGISTRY.register(hcl_with("uniform", "hcl"), name="hcl", config=HCL_CONFIG)
