"""Learning-rate multipliers as a function of training progress in [0, 1] (applied per iteration)."""
from __future__ import annotations

import math
from typing import Callable

from pretrain.common import Registry

LR_SCHEDULE_REGISTRY = Registry("LR_SCHEDULE", key="SOLVER.SCHEDULE", doc="""Learning-rate schedules (SOLVER.SCHEDULE).

A member is a function ``fn(steps, gamma) -> f`` where ``f(progress)`` is the learning-rate multiplier at
training progress in [0, 1] (warm-up is applied on top by ``build_lr_lambda``).""")


@LR_SCHEDULE_REGISTRY.register(name="step")
def step_multiplier(steps, gamma: float) -> Callable[[float], float]:
    """x gamma at each fraction in ``steps`` (the paper: 0.68 and 0.83 of 200 epochs = epochs 136, 166)."""
    def f(progress: float) -> float:
        return gamma ** sum(progress >= s for s in steps)
    return f


@LR_SCHEDULE_REGISTRY.register(name="cosine")
def cosine_multiplier(steps=None, gamma: float = 0.0) -> Callable[[float], float]:
    def f(progress: float) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return f


def build_lr_lambda(name: str, steps, gamma: float, total_iters: int, warmup_iters: int = 0):
    base = LR_SCHEDULE_REGISTRY.get(name)(tuple(steps), gamma)
    total = max(1, total_iters)

    def lr_lambda(it: int) -> float:
        warm = min(1.0, (it + 1) / warmup_iters) if warmup_iters else 1.0
        return warm * base(it / total)
    return lr_lambda
