"""Objectives by name: which views, which encoders, which pool; negatives come from the sampler.

Every objective is an ``nn.Module`` with
- ``forward(view1, view2, index) -> (loss, stats)`` for one training step,
- ``backbone``: the trunk evaluated and exported after pretraining (``build_backbone(cfg)`` makes an
  untrained one of the same architecture),
- ``views``: how many augmented views of each image a step takes (1 or 2),
- ``set_progress(it, epoch)`` / ``observe_loss(loss)``: what the ring's schedule needs,
- ``extra_state()`` / ``load_extra_state()``: non-tensor state (the schedule, sampler RNG) for checkpoints.
"""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

OBJECTIVES: dict[str, Callable[..., nn.Module]] = {}


def register_objective(name: str):
    def deco(cls):
        OBJECTIVES[name] = cls
        return cls
    return deco


def objective_class(name: str):
    from . import cmc, ir, moco, simclr  # noqa: F401  (they register themselves)

    if name not in OBJECTIVES:
        raise ValueError(f"OBJECTIVE.NAME '{name}' is unknown; choose one of: {', '.join(sorted(OBJECTIVES))}.")
    return OBJECTIVES[name]


def build_objective(cfg, dataset_size: int, global_batch: int) -> nn.Module:
    return objective_class(cfg.OBJECTIVE.NAME)(cfg, dataset_size=dataset_size, global_batch=global_batch)


def build_eval_backbone(cfg) -> nn.Module:
    """An untrained backbone with the architecture the objective evaluates (for loading its weights)."""
    return objective_class(cfg.OBJECTIVE.NAME).build_backbone(cfg)
