"""A deterministic, resumable, distributed batch sampler.

Epoch e's order is ``randperm(N)`` seeded by (seed, e), truncated to whole global batches; global
batch b is split into contiguous per-rank slices.  ``start_batch`` skips batches already trained on,
which is how a run killed mid-epoch resumes at the exact next batch.
"""
from __future__ import annotations

import torch
from torch.utils.data import Sampler

from pretrain.config import ConfigError
from pretrain.engine.seeding import derive_seed


class ResumableBatchSampler(Sampler[list[int]]):
    def __init__(self, n: int, global_batch: int, rank: int = 0, world: int = 1, seed: int = 0):
        if global_batch % world:
            raise ConfigError(f"SOLVER.BATCH_SIZE {global_batch} is not divisible by the {world} processes.")
        if n < global_batch:
            raise ConfigError(f"the dataset has {n} images, fewer than one batch (SOLVER.BATCH_SIZE {global_batch}); "
                             "lower SOLVER.BATCH_SIZE or use more data.")
        self.n, self.global_batch, self.rank, self.world, self.seed = n, global_batch, rank, world, seed
        self.local_batch = global_batch // world
        self.epoch, self.start_batch = 0, 0

    @property
    def batches_per_epoch(self) -> int:
        return self.n // self.global_batch

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start_batch

    def __iter__(self):
        g = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch))
        perm = torch.randperm(self.n, generator=g).tolist()
        for b in range(self.start_batch, self.batches_per_epoch):
            lo = b * self.global_batch + self.rank * self.local_batch
            yield perm[lo:lo + self.local_batch]
