"""Optimizers by name (``SOLVER.OPTIMIZER``): the trainer's ``build_optimizer`` asks this registry."""
from __future__ import annotations

import torch

from pretrain.common import Registry

OPTIMIZER_REGISTRY = Registry("OPTIMIZER", key="SOLVER.OPTIMIZER", doc="""Pretraining optimizers (SOLVER.OPTIMIZER).

A member is a builder ``fn(params, solver_cfg) -> torch.optim.Optimizer`` over the trainable parameters, with
the ``SOLVER`` section (LR, MOMENTUM, WEIGHT_DECAY and any key the optimizer declares) for its settings.
The learning-rate schedule (``SOLVER.SCHEDULE``) is applied on top by the trainer.""")


@OPTIMIZER_REGISTRY.register(name="sgd")
def build_sgd(params, s) -> torch.optim.Optimizer:
    """SGD with momentum and weight decay, as every method in the paper."""
    return torch.optim.SGD(params, lr=s.LR, momentum=s.MOMENTUM, weight_decay=s.WEIGHT_DECAY)


def build_optimizer(params, solver_cfg) -> torch.optim.Optimizer:
    return OPTIMIZER_REGISTRY.get(solver_cfg.OPTIMIZER)(params, solver_cfg)
