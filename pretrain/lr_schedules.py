"""Learning-rate multipliers as a function of training progress in [0, 1] (applied per iteration)."""
from __future__ import annotations

import math
from typing import Callable


def step_multiplier(steps, gamma: float) -> Callable[[float], float]:
    """x gamma at each fraction in ``steps`` (the paper: 0.68 and 0.83 of 200 epochs = epochs 136, 166)."""
    def f(progress: float) -> float:
        return gamma ** sum(progress >= s for s in steps)
    return f


def cosine_multiplier(steps=None, gamma: float = 0.0) -> Callable[[float], float]:
    def f(progress: float) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return f


LR_SCHEDULES = {"step": step_multiplier, "cosine": cosine_multiplier}


def build_lr_lambda(name: str, steps, gamma: float, total_iters: int, warmup_iters: int = 0):
    if name not in LR_SCHEDULES:
        raise ValueError(f"SOLVER.SCHEDULE '{name}' is unknown; choose one of: {', '.join(LR_SCHEDULES)}.")
    base = LR_SCHEDULES[name](tuple(steps), gamma)
    total = max(1, total_iters)

    def lr_lambda(it: int) -> float:
        warm = min(1.0, (it + 1) / warmup_iters) if warmup_iters else 1.0
        return warm * base(it / total)
    return lr_lambda
