"""Objectives by name: which views, which encoders, which pool; negatives come from the sampler.

Every objective is an ``nn.Module`` with
- ``forward(view1, view2, index) -> (loss, stats)`` for one training step,
- ``backbone``: the trunk evaluated and exported after pretraining,
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


def build_objective(cfg, dataset_size: int, global_batch: int) -> nn.Module:
    from . import moco  # noqa: F401  (registers)

    name = cfg.OBJECTIVE.NAME
    if name not in OBJECTIVES:
        raise ValueError(f"OBJECTIVE.NAME '{name}' is unknown; choose one of: {', '.join(sorted(OBJECTIVES))}.")
    return OBJECTIVES[name](cfg, dataset_size=dataset_size, global_batch=global_batch)
