"""``ring_mochi``: MoCHi's mixes from the ring's hardest members."""
from __future__ import annotations

from pretrain.contrastive.estimators.base import ESTIMATOR_REGISTRY
from pretrain.contrastive.estimators.mochi import MOCHI_CONFIG, mochi_with

ESTIMATOR_REGISTRY.register(mochi_with("ring", "ring_mochi"), name="ring_mochi", config=MOCHI_CONFIG)
