"""Pools of candidate negatives.  A pool answers "give me the candidates" and "update yourself".

Both are modules with buffers, so they travel in the model's state_dict and checkpoints.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from pretrain.common import UserError


class Queue(nn.Module):
    """MoCo's FIFO queue of K keys; K must be a multiple of ``keys_per_step``, the global batch of keys
    enqueued after each step (checked here, once)."""

    def __init__(self, dim: int, size: int, keys_per_step: int):
        super().__init__()
        if size % keys_per_step:
            raise UserError(f"MOCO.QUEUE_SIZE {size} is not a multiple of SOLVER.BATCH_SIZE {keys_per_step}; choose "
                            f"a multiple (e.g. {keys_per_step * max(1, size // keys_per_step)}).")
        self.register_buffer("keys", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    def candidates(self) -> torch.Tensor:
        return self.keys

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        n, size = keys.shape[0], self.keys.shape[0]
        # rows ptr .. ptr + n - 1, computed on the device: reading the pointer on the host would sync
        rows = (self.ptr + torch.arange(n, device=self.ptr.device)) % size
        self.keys.index_copy_(0, rows, keys.to(self.keys.dtype))
        self.ptr.copy_((self.ptr + n) % size)


class MemoryBank(nn.Module):
    """One L2-normalised entry per training image: M[i] <- normalize(m * M[i] + (1 - m) * z)."""

    def __init__(self, size: int, dim: int, momentum: float):
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise UserError(f"BANK.MOMENTUM must lie in [0, 1), got {momentum}; 0 replaces entries (the paper's "
                            "code), 0.5 is the original IR.")
        self.momentum = momentum
        self.register_buffer("bank", F.normalize(torch.randn(size, dim), dim=1))

    def candidates(self) -> torch.Tensor:
        return self.bank

    def get(self, idx: torch.Tensor) -> torch.Tensor:
        return self.bank.index_select(0, idx)

    @torch.no_grad()
    def update(self, idx: torch.Tensor, z: torch.Tensor) -> None:
        new = self.momentum * self.bank.index_select(0, idx) + (1.0 - self.momentum) * z.to(self.bank.dtype)
        self.bank.index_copy_(0, idx, F.normalize(new, dim=1))
