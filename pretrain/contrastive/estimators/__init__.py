"""Estimators (``ESTIMATOR_REGISTRY``): ``base.py`` holds what they share; every other module in this package
is imported here, so a new estimator is one new file that registers itself (with its own settings)."""
from __future__ import annotations

import importlib
import pkgutil

from pretrain.common import load_plugins
from pretrain.contrastive.estimators.base import (ESTIMATOR_REGISTRY, Estimator, Negatives, build_estimator,
                                                  contrastive_loss, infonce)

for _m in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["ESTIMATOR_REGISTRY", "Estimator", "Negatives", "build_estimator", "contrastive_loss", "infonce",
           "estimator_names"]


def estimator_names() -> list[str]:
    """Every registered estimator (plugins included): NCE first (the base every other pairs with), then the
    registry's order (this package's modules alphabetically, then plugins)."""
    load_plugins()
    names = ESTIMATOR_REGISTRY.in_order()
    return ["nce"] + [n for n in names if n != "nce"]
