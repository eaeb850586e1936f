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
  below it, o -= delta (harder); equal, unchanged; clamped to [min, 1].  Kept on the training device:
  the loss is never read on the host for it.
- ``adaptive_acc``: the same driven by an accuracy after each epoch (higher is better: below the mean of
  the previous RING.ADAPTIVE_ACC_WINDOW, o += RING.ADAPTIVE_ACC_DELTA; above, o -= delta); the authors'
  values are delta 0.05 over a window of 5.  RING.ADAPTIVE_ACC_METRIC names the accuracy: ``bank_1nn``
  (the default, the authors': the test split's 1-NN against a bank of the training anchors, every epoch;
  ``pretrain/evaluation/bank_nn.py``) or ``knn`` (the kNN monitor's weighted 200-NN on backbone features,
  every KNN.PERIOD_EPOCHS).
"""
from __future__ import annotations

import math

import torch

from pretrain.common import Registry, UserError

RING_SCHEDULE_REGISTRY = Registry("RING_SCHEDULE", key="RING.SCHEDULE", doc="""Schedules of the ring's outer fraction.

A member is a class built as ``cls(ring_cfg, iters_per_epoch)`` (the config's RING node; optimizer steps
per epoch) whose instances are called as ``schedule(step) -> o`` in [RING.OUTER, 1], ``step`` being the
number of optimizer steps taken, or as a 0-dim float64 tensor on the training device (``adaptive``: the
samplers then select with fixed shapes, see ``samplers.py``).  A schedule that reads a metric sets
``observes`` to ``"loss"`` (it gets ``observe(loss)`` after every step, the rank-averaged loss as a device
tensor: no host sync) or ``"knn"`` (``observe(top1)`` after each kNN evaluation); ``place(device)`` moves
its state to the training device; ``state_dict``/``load_state_dict`` carry it through checkpoints.""",
    # every schedule's: the final outer fraction o, the selector, the annealing span A (epochs; 0: none)
    config={"RING": {"OUTER": 0.1, "SCHEDULE": "constant", "ANNEAL_EPOCHS": 0.0}})

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

    def place(self, device: torch.device) -> None:
        """Moves tensor state to the training device (called once before training)."""

    def observe(self, metric: float) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


@RING_SCHEDULE_REGISTRY.register(name="constant")
class Constant(Schedule):
    def __call__(self, step):
        return self.final


@RING_SCHEDULE_REGISTRY.register(name="linear")
class Linear(Schedule):
    """From 1 at step 0 to ``min`` at step A - 1 (np.linspace's endpoints), then ``min``."""

    def __call__(self, step):
        if step >= self.span or self.span < 2:
            return self.final
        return 1.0 - (1.0 - self.final) * step / (self.span - 1)


@RING_SCHEDULE_REGISTRY.register(name="step")
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


@RING_SCHEDULE_REGISTRY.register(name="exponential", config={"RING": {"EXP_DECAY": 0.1}})
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
    """Moves o by +-delta against the mean of the last ``window`` observations (none: no move).

    The state is three tensors: o (float64, 0-dim), the last ``window`` observations (oldest first, the
    last ``count`` slots filled) and ``count``.  ``observe`` is tensor arithmetic only, so with
    ``device_resident`` the state lives on the training device, ``observe`` takes the loss as a device
    tensor and ``__call__`` hands the sampler o as a 0-dim tensor: no host synchronisation.  float64 as
    the authors' Python floats: the sequence of o is the one a host loop over the same losses gives."""

    lower_is_better = True
    device_resident = False  # __call__ returns the 0-dim tensor (True) or a float

    def __init__(self, ring_cfg, iters_per_epoch, delta: float, window: int):
        super().__init__(ring_cfg, iters_per_epoch)
        self.delta, self.window = float(delta), int(window)
        if self.window < 1:
            raise UserError(f"the adaptive schedule's window must be >= 1 step or evaluation, got {window}; "
                            "set RING.ADAPTIVE_WINDOW / RING.ADAPTIVE_ACC_WINDOW.")
        self._reset(torch.device("cpu"), 1.0, [])

    def _reset(self, device, value: float, history: list[float]) -> None:
        history = [float(x) for x in history][-self.window:]
        self.value = torch.tensor(float(value), dtype=torch.float64, device=device)
        self.history = torch.zeros(self.window, dtype=torch.float64, device=device)
        if history:
            self.history[-len(history):] = torch.tensor(history, dtype=torch.float64)
        self.count = torch.tensor(len(history), device=device)

    def place(self, device):
        self.value, self.history, self.count = (t.to(device) for t in (self.value, self.history, self.count))

    def __call__(self, step):
        return self.value if self.device_resident else float(self.value)

    def observe(self, metric):
        metric = torch.as_tensor(metric).to(device=self.value.device, dtype=torch.float64).reshape(())
        filled = torch.arange(self.window, device=self.value.device) >= self.window - self.count
        mean = (self.history * filled).sum() / self.count.clamp_min(1)
        worse, better = (metric > mean, metric < mean) if self.lower_is_better else (metric < mean, metric > mean)
        # worse: easier (a wider ring), better: harder; nothing to compare with on the first observation
        move = (worse.double() - better.double()) * (self.count > 0)
        self.value = (self.value + self.delta * move).clamp(self.final, 1.0)
        self.history = torch.cat([self.history[1:], metric.reshape(1)])
        self.count = (self.count + 1).clamp_max(self.window)

    def state_dict(self):  # plain floats: read from the device only when a checkpoint is written
        return {"value": float(self.value), "history": self.history[self.window - int(self.count):].tolist()}

    def load_state_dict(self, state):
        self._reset(self.value.device, state["value"], state["history"])


@RING_SCHEDULE_REGISTRY.register(name="adaptive", config={"RING": {"ADAPTIVE_DELTA": 0.01, "ADAPTIVE_WINDOW": 10}})
class Adaptive(_Adaptive):
    observes = "loss"
    device_resident = True  # fed the loss tensor every step: kept where the loss is

    def __init__(self, ring_cfg, iters_per_epoch):
        super().__init__(ring_cfg, iters_per_epoch, ring_cfg.ADAPTIVE_DELTA, ring_cfg.ADAPTIVE_WINDOW)


@RING_SCHEDULE_REGISTRY.register(name="adaptive_acc", config={"RING": {
    "ADAPTIVE_ACC_DELTA": 0.05, "ADAPTIVE_ACC_WINDOW": 5, "ADAPTIVE_ACC_METRIC": "bank_1nn"}})
class AdaptiveAccuracy(_Adaptive):
    observes = "knn"
    lower_is_better = False

    def __init__(self, ring_cfg, iters_per_epoch):
        super().__init__(ring_cfg, iters_per_epoch, ring_cfg.ADAPTIVE_ACC_DELTA, ring_cfg.ADAPTIVE_ACC_WINDOW)


def build_schedule(ring_cfg, iters_per_epoch: int) -> Schedule:
    return RING_SCHEDULE_REGISTRY.get(ring_cfg.SCHEDULE)(ring_cfg, iters_per_epoch)
