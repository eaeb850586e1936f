"""``dcl``: the debiased contrastive loss (Chuang et al. 2020) over uniform negatives; its loss form is shared
with HCL (``debiased_loss``, beta = 0 here)."""
from __future__ import annotations

import math

import torch

from pretrain.contrastive.estimators.base import ESTIMATOR_REGISTRY, Estimator, own_temperature, tau_plus_of
from pretrain.contrastive.samplers import SAMPLER_REGISTRY


def debiased_loss(pos: torch.Tensor, neg: torch.Tensor, temperature: float, tau_plus: float,
                  beta: float = 0.0, n: int | torch.Tensor | None = None, stats: dict | None = None) -> torch.Tensor:
    """DCL (beta = 0) and HCL (beta > 0): -mean log(P / (P + Ng)) with Ng the (reweighted) debiased sum of the
    N negatives' exp-similarities, clamped below at N exp(-1/tau).  pos (B,), neg (B, M): similarities, -inf
    for a left-out negative; ``n``: N, per row (B,) when some are left out (default M).  ``stats``, when
    given, receives ``clamped``: the fraction of anchors whose Ng is the clamp (a device tensor)."""
    p, s = pos.float() / temperature, neg.float() / temperature
    n = s.shape[1] if n is None else n.to(s.dtype)
    m = torch.maximum(s.max(dim=1).values, p).detach()  # factored out of every exponential
    g = torch.exp(s - m[:, None])
    # HCL: w_j = G_j^beta / mean_k G_k^beta = N softmax(beta s)_j; the gradient flows through the weights
    neg_sum = n * (torch.softmax(beta * s, dim=1) * g).sum(dim=1) if beta else g.sum(dim=1)
    pos_e = torch.exp(p - m)
    ng = (neg_sum - tau_plus * n * pos_e) / (1.0 - tau_plus)
    floor = n * math.exp(-1.0 / temperature) * torch.exp(-m)
    if stats is not None:
        stats["clamped"] = (ng.detach() <= floor).float().mean()
    ng = torch.clamp(ng, min=floor)
    return (torch.log(pos_e + ng) - (p - m)).mean()


def clamp_warning(name: str, section: str):
    """The warning a debiased estimator's ``clamped`` metric triggers above one half (once per run)."""
    def warn(stats: dict) -> str | None:
        frac = stats.get("clamped")
        if frac is None or frac <= 0.5:
            return None
        return (f"{name}: {frac:.0%} of anchors hit the clamp N*exp(-1/tau), so their negatives get no gradient "
                f"(the clamp binds once an anchor's InfoNCE loss is below about log(1 + tau+ N)); raise "
                f"{section}.TEMPERATURE (the authors' 0.5) or lower {section}.TAU_PLUS.")
    return warn


# TAU_PLUS: the class prior, the probability that a negative shares the anchor's class; TEMPERATURE: the loss
# form's own (0: OBJECTIVE.TEMPERATURE).  Both the released code's (chingyaoc/DCL: 0.1, 0.5).
@ESTIMATOR_REGISTRY.register(name="dcl", config={"DCL": {"TAU_PLUS": 0.1, "TEMPERATURE": 0.5}})
def build_dcl(cfg) -> Estimator:
    """Debiased contrastive loss over uniform negatives (DCL.TAU_PLUS, DCL.TEMPERATURE)."""
    tau_plus = tau_plus_of(cfg.DCL.TAU_PLUS, "DCL.TAU_PLUS")
    return Estimator("dcl", SAMPLER_REGISTRY.get("uniform")(cfg),  # never masked: uniform
                     lambda neg, t: debiased_loss(neg.pos, neg.logits, t, tau_plus, stats=neg.stats),
                     temperature=own_temperature(cfg.DCL.TEMPERATURE, "DCL.TEMPERATURE"),
                     warn=clamp_warning("dcl", "DCL"))
