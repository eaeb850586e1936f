"""Schedules of the ring's outer fraction o (the inner fraction stays a fraction of the outer set).

Each schedule maps training progress to o in [RING.OUTER, 1]; ``observe(loss)`` feeds the adaptive one.
Annealing (paper Fig. 1c) is ``linear`` with ``RING.ANNEAL_EPOCHS`` > 0: o moves from 1.0 (all
candidates) to RING.OUTER over the first ANNEAL_EPOCHS epochs, per iteration.
"""
from __future__ import annotations

import math
from collections import deque

from ..common import Registry, UserError

SCHEDULE_REGISTRY = Registry("SCHEDULE", key="RING.SCHEDULE", doc="""Schedules of the ring's outer fraction.

A member is a class built as ``cls(ring_cfg)`` (the config's RING node) whose instances are called as
``schedule(iteration, epoch) -> o`` in [RING.OUTER, 1].  A schedule that reads the loss sets
``needs_loss = True`` and receives ``observe(loss)`` after every step; ``state_dict``/``load_state_dict``
carry its state through checkpoints.""")


class Schedule:
    needs_loss = False  # True: the engine calls observe(loss) every step (a device sync)

    def __init__(self, ring_cfg):
        self.final = float(ring_cfg.OUTER)
        if not 0.0 < self.final <= 1.0:
            raise UserError(f"RING.OUTER must lie in (0, 1], got {self.final}; set a fraction such as 0.1.")

    def __call__(self, it: int, epoch: float) -> float:
        raise NotImplementedError

    def observe(self, loss: float) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


@SCHEDULE_REGISTRY.register(name="constant")
class Constant(Schedule):
    def __call__(self, it, epoch):
        return self.final


@SCHEDULE_REGISTRY.register(name="linear")
class Linear(Schedule):
    """o = 1 - (1 - OUTER) * min(1, epoch / ANNEAL_EPOCHS)."""

    def __init__(self, ring_cfg):
        super().__init__(ring_cfg)
        self.anneal = float(ring_cfg.ANNEAL_EPOCHS)

    def __call__(self, it, epoch):
        if self.anneal <= 0:
            return self.final
        return 1.0 - (1.0 - self.final) * min(1.0, epoch / self.anneal)


@SCHEDULE_REGISTRY.register(name="step")
class Step(Schedule):
    """o = max(OUTER, GAMMA ** floor(epoch / STEP_EPOCHS))."""

    def __init__(self, ring_cfg):
        super().__init__(ring_cfg)
        self.every, self.gamma = float(ring_cfg.STEP_EPOCHS), float(ring_cfg.STEP_GAMMA)

    def __call__(self, it, epoch):
        return max(self.final, self.gamma ** math.floor(epoch / self.every))


@SCHEDULE_REGISTRY.register(name="exponential")
class Exponential(Schedule):
    """o = max(OUTER, EXP_DECAY ** iteration)."""

    def __init__(self, ring_cfg):
        super().__init__(ring_cfg)
        self.decay = float(ring_cfg.EXP_DECAY)

    def __call__(self, it, epoch):
        return max(self.final, self.decay ** it)


@SCHEDULE_REGISTRY.register(name="adaptive")
class Adaptive(Schedule):
    """Starts at 1; after each step, o -= DELTA when the loss is below the mean of the last WINDOW losses
    (learning is progressing: harder negatives), else o += DELTA; clamped to [OUTER, 1]."""

    needs_loss = True

    def __init__(self, ring_cfg):
        super().__init__(ring_cfg)
        self.delta, self.window = float(ring_cfg.ADAPTIVE_DELTA), int(ring_cfg.ADAPTIVE_WINDOW)
        self.value, self.history = 1.0, deque(maxlen=self.window)

    def __call__(self, it, epoch):
        return self.value

    def observe(self, loss):
        if len(self.history) == self.window:
            mean = sum(self.history) / len(self.history)
            step = -self.delta if loss < mean else self.delta
            self.value = min(1.0, max(self.final, self.value + step))
        self.history.append(float(loss))

    def state_dict(self):
        return {"value": self.value, "history": list(self.history)}

    def load_state_dict(self, state):
        self.value = float(state["value"])
        self.history = deque(state["history"], maxlen=self.window)


def build_schedule(ring_cfg) -> Schedule:
    return SCHEDULE_REGISTRY.get(ring_cfg.SCHEDULE)(ring_cfg)
