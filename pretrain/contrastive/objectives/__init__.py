"""Objectives by name (``OBJECTIVE_REGISTRY``): which views, which encoders, which pool.

Every module in this package is imported here, so a new objective is one new file that registers itself.
"""
from __future__ import annotations

import importlib
import pkgutil

import torch.nn as nn

from pretrain.common import Registry

OBJECTIVE_REGISTRY = Registry("OBJECTIVE", key="OBJECTIVE.NAME", doc="""Pretraining objectives (OBJECTIVE.NAME).

A member is an ``nn.Module`` class (usually a ``base.ContrastiveObjective``) built as
``cls(cfg, dataset_size=N, global_batch=B)``, with
- ``forward(view1, view2, index) -> (loss, stats)`` for one training step (``stats``: numbers to log),
- ``backbone``: the trunk evaluated and exported after pretraining, and the classmethod
  ``build_backbone(cfg)`` that makes an untrained one of the same architecture,
- ``views``: how many augmented views of each image a step takes (1 or 2); ``input_streams``: "rgb", or
  "lab" (CMC) — what a random-init baseline of the same architecture must read,
- ``set_progress(step)`` / ``observe(metric)``: what the ring's schedule needs,
- ``extra_state()`` / ``load_extra_state()``: non-tensor state (schedule, sampler RNG) for checkpoints.""")

for _m in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_m.name}")


def objective_class(name: str) -> type[nn.Module]:
    return OBJECTIVE_REGISTRY.get(name)


def build_objective(cfg, dataset_size: int, global_batch: int) -> nn.Module:
    obj = objective_class(cfg.OBJECTIVE.NAME)(cfg, dataset_size=dataset_size, global_batch=global_batch)
    if not isinstance(obj, nn.Module) or not hasattr(obj, "backbone"):
        raise TypeError(f"objective '{cfg.OBJECTIVE.NAME}' built a {type(obj).__name__} without a backbone")
    return obj


def build_eval_backbone(cfg) -> nn.Module:
    """An untrained backbone with the architecture the objective evaluates (for loading its weights)."""
    return objective_class(cfg.OBJECTIVE.NAME).build_backbone(cfg)
