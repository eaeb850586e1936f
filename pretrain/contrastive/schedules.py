"""Schedules of the ring's outer fraction o, exactly as the authors' policies compute them.

Only o moves; the inner fraction stays a constant fraction of the outer set.  What o = 1 keeps: the ring
over N candidates is ranks ``[floor(iota * N), N)``, so even "all negatives" drops the ``floor(iota * N)``
most similar candidates (with RING.INNER 0.1: the top 10 %); only ``ball`` (iota = 0) keeps all of them.

Let ``min`` = RING.OUTER (the authors hard-code 0.1), ``s`` the number of optimizer steps taken so far
and ``A = int(RING.ANNEAL_EPOCHS * iterations_per_epoch)`` the annealing span.  For ``s >= A`` every
annealed schedule holds ``min``.

- ``constant``: ``min``.
- ``linear``: ``np.linspace(min, 1, A)[::-1][s]``, i.e. ``1 - (1 - min) * s / (A - 1)``.
- ``step``: the levels ``1.0, 0.9, ..., min`` (steps of 0.1; ten levels for min 0.1), each lasting
  ``int(A / levels)`` steps.
- ``exponential``: ``min + (1 - min) * exp(-RING.EXP_DECAY * s)`` (decay 0.1 per step).
- ``adaptive``: starts at 1; after each step the loss is compared with the mean of the previous
  RING.ADAPTIVE_WINDOW losses (from the second step on): above it, o += RING.ADAPTIVE_DELTA (easier);
  below it, o -= delta (harder); equal, unchanged; clamped to [min, 1].
- ``adaptive_acc``: the same driven by the kNN top-1 accuracy after each monitored epoch (higher is
  better: below the mean of the previous RING.ADAPTIVE_ACC_WINDOW, o += RING.ADAPTIVE_ACC_DELTA; above,
  o -= delta); the authors' values are delta 0.05 over a window of 5.
"""
from __future__ import annotations

import math

from ..common import Registry, UserError

SCHEDULE_REGISTRY = Registry("SCHEDULE", key="RING.SCHEDULE", doc="""Schedules of the ring's outer fraction.

A member is a class built as ``cls(ring_cfg, iters_per_epoch)`` (the config's RING node; optimizer steps
per epoch) whose instances are called as ``schedule(step) -> o`` in [RING.OUTER, 1], ``step`` being the
number of optimizer steps taken.  A schedule that reads a metric sets ``observes`` to ``"loss"`` (it gets
``observe(loss)`` after every step: a host sync) or ``"knn"`` (``observe(top1)`` after each kNN
evaluation); ``state_dict``/``load_state_dict`` carry its state through checkpoints.""")

STEP_LEVEL = 0.1  # the step policy's distance between levels


class Schedule:
    observes: str | None = None  # None | "loss" | "knn": what observe() is fed

    def __init__(self, ring_cfg, iters_per_epoch: int):
        self.final = float(ring_cfg.OUTER)
        if not 0.0 < self.final <= 1.0:
            raise UserError(f"RING.OUTER must lie in (0, 1], got {self.final}; set a fraction such as 0.1.")
        self.span = int(float(ring_cfg.ANNEAL_EPOCHS) * iters_per_epoch)  # A, in optimizer steps

    def __call__(self, step: int) -> float:
        raise NotImplementedError

    def observe(self, metric: float) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


@SCHEDULE_REGISTRY.register(name="constant")
class Constant(Schedule):
    def __call__(self, step):
        return self.final


@SCHEDULE_REGISTRY.register(name="linear")
class Linear(Schedule):
    """From 1 at step 0 to ``min`` at step A - 1 (np.linspace's endpoints), then ``min``."""

    def __call__(self, step):
        if step >= self.span or self.span < 2:
            return self.final
        return 1.0 - (1.0 - self.final) * step / (self.span - 1)


@SCHEDULE_REGISTRY.register(name="step")
class Step(Schedule):
    """Levels 1.0, 0.9, ..., ``min``, each ``int(A / levels)`` steps long, then ``min``."""

    def __init__(self, ring_cfg, iters_per_epoch):
        super().__init__(ring_cfg, iters_per_epoch)
        n = int(round((1.0 - self.final) / STEP_LEVEL)) + 1
        self.levels = [1.0 - STEP_LEVEL * j for j in range(n - 1)] + [self.final]
        self.length = self.span // len(self.levels)

    def __call__(self, step):
        if self.length == 0 or step >= self.length * len(self.levels):
            return self.final
        return self.levels[step // self.length]


@SCHEDULE_REGISTRY.register(name="exponential")
class Exponential(Schedule):
    """``min + (1 - min) * exp(-decay * step)`` for step < A, then ``min``."""

    def __init__(self, ring_cfg, iters_per_epoch):
        super().__init__(ring_cfg, iters_per_epoch)
        self.decay = float(ring_cfg.EXP_DECAY)

    def __call__(self, step):
        if step >= self.span:
            return self.final
        return self.final + (1.0 - self.final) * math.exp(-self.decay * step)


class _Adaptive(Schedule):
    """Moves o by +-delta against the mean of the last ``window`` observations (none: no move)."""

    lower_is_better = True

    def __init__(self, ring_cfg, iters_per_epoch, delta: float, window: int):
        super().__init__(ring_cfg, iters_per_epoch)
        self.delta, self.window = float(delta), int(window)
        self.value, self.history = 1.0, []

    def __call__(self, step):
        return self.value

    def observe(self, metric):
        metric = float(metric)
        if self.history:
            recent = self.history[-self.window:]
            mean = sum(recent) / len(recent)
            worse = metric > mean if self.lower_is_better else metric < mean
            better = metric < mean if self.lower_is_better else metric > mean
            if worse:
                self.value += self.delta  # easier: a wider ring
            elif better:
                self.value -= self.delta  # harder
        self.value = min(1.0, max(self.final, self.value))
        self.history = (self.history + [metric])[-self.window:]

    def state_dict(self):
        return {"value": self.value, "history": list(self.history)}

    def load_state_dict(self, state):
        self.value, self.history = float(state["value"]), [float(x) for x in state["history"]]


@SCHEDULE_REGISTRY.register(name="adaptive")
class Adaptive(_Adaptive):
    observes = "loss"

    def __init__(self, ring_cfg, iters_per_epoch):
        super().__init__(ring_cfg, iters_per_epoch, ring_cfg.ADAPTIVE_DELTA, ring_cfg.ADAPTIVE_WINDOW)


@SCHEDULE_REGISTRY.register(name="adaptive_acc")
class AdaptiveAccuracy(_Adaptive):
    observes = "knn"
    lower_is_better = False

    def __init__(self, ring_cfg, iters_per_epoch):
        super().__init__(ring_cfg, iters_per_epoch, ring_cfg.ADAPTIVE_ACC_DELTA, ring_cfg.ADAPTIVE_ACC_WINDOW)


def build_schedule(ring_cfg, iters_per_epoch: int) -> Schedule:
    return SCHEDULE_REGISTRY.get(ring_cfg.SCHEDULE)(ring_cfg, iters_per_epoch)
