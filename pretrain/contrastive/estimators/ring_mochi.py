"""``ring_mochi``: MoCHi's mixes from the ring's hardest members (RING_MOCHI.*).

Two rules keep the mixes a ring's negatives rather than a second estimator on top of it:

- counts relative to the ring: of the R negatives the ring hands the loss per anchor (its members for MoCo
  and SimCLR, the BANK.NUM_NEGATIVES draws from it for IR and CMC), the ceil(HARDEST * R) most similar are
  mixed from, into ceil(MIX * R) pair mixes and ceil(QUERY_MIX * R) query mixes.  The defaults 1/16, 1/16,
  1/64 are MoCHi's own proportions (1024, 1024, 256 against a queue of 16,384); MOCHI's absolute counts
  against a ring of a few hundred would make the hardest-N filter vacuous and the mixes outnumber the ring.
- IN_RING (default True): a synthetic negative is kept only where its similarity to the anchor lies within
  the ring's band, [the least, the most] similar member's.  A query mix is closer to the anchor than the
  member it mixes, so most fall inside the band the ring removes as likely false negatives; kept, they
  would carry most of the partition mass.  Dropped mixes are left out of the loss exactly (-inf logits).

``synthetic``: the mean number of synthetic negatives kept per anchor, logged as a training metric.
"""
from __future__ import annotations

import math

import torch

from pretrain.common import UserError
from pretrain.contrastive.estimators.base import ESTIMATOR_REGISTRY, Estimator, Negatives, contrastive_loss
from pretrain.contrastive.estimators.mochi import draw_mochi, mochi_logits
from pretrain.contrastive.samplers import SAMPLER_REGISTRY

RING_MOCHI_CONFIG = {"RING_MOCHI": {"HARDEST": 1 / 16, "MIX": 1 / 16, "QUERY_MIX": 1 / 64, "IN_RING": True}}


def ring_counts(count: int | torch.Tensor, fraction: float) -> int | torch.Tensor:
    """ceil(fraction * R) for a ring of R members (an int, or per row (B,) on the device)."""
    if isinstance(count, int):
        return math.ceil(fraction * count)
    return torch.ceil(fraction * count.double()).long()


def in_band(extra: torch.Tensor, negatives: Negatives) -> torch.Tensor:
    """(B, S) True where a synthetic negative's similarity lies within [min, max] of the ring members'."""
    logits = negatives.logits.detach().float()
    if negatives.valid is None:
        hi, lo = logits.max(dim=1, keepdim=True).values, logits.min(dim=1, keepdim=True).values
    else:
        hi = logits.masked_fill(~negatives.valid, float("-inf")).max(dim=1, keepdim=True).values
        lo = logits.masked_fill(~negatives.valid, float("inf")).min(dim=1, keepdim=True).values
    e = extra.detach()
    return (e <= hi) & (e >= lo)


@ESTIMATOR_REGISTRY.register(name="ring_mochi", config=RING_MOCHI_CONFIG)
def build_ring_mochi(cfg) -> Estimator:
    """Hard negative mixing inside the ring (RING_MOCHI.*: counts as fractions of the ring's size)."""
    R = cfg.RING_MOCHI
    if not (0 < R.HARDEST <= 1 and 0 <= R.MIX and 0 <= R.QUERY_MIX):
        raise UserError(f"RING_MOCHI.HARDEST must lie in (0, 1] and RING_MOCHI.MIX, RING_MOCHI.QUERY_MIX be >= 0 "
                        f"(fractions of the ring's size), got {R.HARDEST}, {R.MIX}, {R.QUERY_MIX}.")
    fh, fm, fq, keep_in_ring = float(R.HARDEST), float(R.MIX), float(R.QUERY_MIX), bool(R.IN_RING)

    def loss(neg: Negatives, t: float) -> torch.Tensor:
        count = neg.count()
        width = neg.logits.shape[1]  # static shapes: a ring sized on the device has every column, masked
        if isinstance(count, int):
            draws = draw_mochi(neg, ring_counts(count, fh), ring_counts(count, fm), ring_counts(count, fq))
            keep = None
        else:
            s, s2 = ring_counts(width, fm), ring_counts(width, fq)
            draws = draw_mochi(neg, ring_counts(width, fh), s, s2, hardest_per_row=ring_counts(count, fh))
            cols = torch.arange(s + s2, device=count.device)
            pair_n, query_n = ring_counts(count, fm)[:, None], ring_counts(count, fq)[:, None]
            keep = torch.where(cols < s, cols < pair_n, cols - s < query_n)
        extra = mochi_logits(neg, draws)  # gradient into the anchor only
        if keep_in_ring:
            band = in_band(extra, neg)
            keep = band if keep is None else keep & band
        if keep is not None:
            extra = extra.masked_fill(~keep, float("-inf"))
        neg.stats["synthetic"] = (extra.shape[1] if keep is None else keep.sum(dim=1).float().mean())
        return contrastive_loss(neg.pos, torch.cat([neg.masked_logits().float(), extra], dim=1), t)
    return Estimator("ring_mochi", SAMPLER_REGISTRY.get("ring")(cfg), loss)
