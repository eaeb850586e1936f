"""BatchNorm with statistics per sub-batch, in one pass of the network.

MoCo's shuffle-BN needs a query and its key never to share BatchNorm statistics.  On one process this is
emulated with ``MOCO.BN_SPLITS`` sub-batches.  Running the whole encoder once per sub-batch does that
but runs every convolution at batch B / splits (at batch 64: 8 passes at batch 8).  Here only the
BatchNorm layers split: each normalises contiguous slices of the batch with its own statistics, in the
same order and with the same running-statistics updates as the per-sub-batch passes (each slice moves
the running averages once), while the convolutions run on the whole batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SplitBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` (same parameters, buffers and state-dict keys) that, in training mode, normalises
    ``splits`` contiguous slices of the batch with their own statistics.  In eval mode: plain BatchNorm."""

    def __init__(self, *args, splits: int = 1, **kwargs):
        super().__init__(*args, **kwargs)
        self.splits = int(splits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.splits <= 1:
            return super().forward(x)
        out = []
        for chunk in x.chunk(self.splits):
            factor = 0.0
            if self.track_running_stats:  # as the module itself counts and averages each sub-batch pass
                self.num_batches_tracked.add_(1)
                factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            out.append(F.batch_norm(chunk, self.running_mean, self.running_var, self.weight, self.bias, True,
                                    factor, self.eps))
        return torch.cat(out)


_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def split_batchnorm_(module: nn.Module, splits: int) -> bool:
    """Replaces every ``nn.BatchNorm2d`` in ``module`` by a ``SplitBatchNorm2d`` sharing its parameters and
    buffers (in place) and returns True; when ``module`` has another kind of BatchNorm (timm's
    ``BatchNormAct2d``, a 1-d one), changes nothing and returns False: the caller then keeps one pass of
    the module per sub-batch."""
    if any(isinstance(m, _BATCH_NORMS) and type(m) is not nn.BatchNorm2d for m in module.modules()):
        return False
    _convert(module, splits)
    return True


def _convert(module: nn.Module, splits: int) -> None:
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            new = SplitBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                   child.track_running_stats, splits=splits)
            new.weight, new.bias = child.weight, child.bias
            for buf in ("running_mean", "running_var", "num_batches_tracked"):
                setattr(new, buf, getattr(child, buf))
            new.train(child.training)
            setattr(module, name, new)
        else:
            _convert(child, splits)
