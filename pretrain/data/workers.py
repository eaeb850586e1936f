"""How many worker processes a DataLoader gets: ``DATA.NUM_WORKERS``, or for ``AUTO`` (-1, the default) a
count chosen for the device that consumes the batches.

On a CPU the training (or feature-extraction) step already runs on every core through its intra-op
threads: a worker process can only take cores from it, and it costs a process's memory.  Measured on 2
cores (MoCo, ResNet-18, 32 px; docs/benchmarks.md, 2026-12-08): without workers ringnce's peak (summed
PSS) fell from 1,430 to 1,301 MB at batch 64 and from 2,371 to 2,124 MB at 256, at the same speed within
the rounds' spread (the augmentation then runs between steps: ~75 ms of a 1.5 s batch-64 step).  So on a
CPU, auto means no workers.  On a GPU the cores are free for the loader: auto gives each local process
its share of the cores this process may run on, one kept for the process itself, at most ``MAX_AUTO``.

The pretraining views do not depend on the worker count (each sample is seeded by (seed, epoch, index));
a loader that augments with the global random stream (the paper and moco linear protocols) draws
different augmentations with and without workers, as with any other worker count.
"""
from __future__ import annotations

import os

import torch

AUTO = -1
MAX_AUTO = 8


def available_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def loader_workers(setting: int, device) -> int:
    """``setting`` (DATA.NUM_WORKERS) resolved for a loader whose batches ``device`` consumes."""
    if setting != AUTO:
        return int(setting)
    if torch.device(device).type == "cpu":
        return 0
    local_processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, min(MAX_AUTO, available_cores() // local_processes - 1))
