"""Negative samplers (``SAMPLER_REGISTRY``): ``base.py`` holds what they share; every other module in this
package is imported here, so a new sampler is one new file that registers itself."""
from __future__ import annotations

import importlib
import pkgutil

from pretrain.contrastive.samplers.base import (SAMPLER_REGISTRY, Candidates, Sampler, kept_positions, ring_bounds,
                                                ring_bounds_on_device, ring_indices, uniform_draws, uniform_ranks)

for _m in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["SAMPLER_REGISTRY", "Candidates", "Sampler", "kept_positions",
           "ring_bounds", "ring_bounds_on_device", "ring_indices", "uniform_draws", "uniform_ranks"]
