"""Resuming a Detectron2 run where it stopped, data stream included.

Detectron2's ``resume_or_load`` restores the model, optimizer, scheduler and iteration, but its data
loader restarts its sampler at the first index and its random number generators wherever they are.  Here:
- ``ResumableTrainingSampler`` is Detectron2's ``TrainingSampler`` that drops the indices this rank
  consumed before the checkpoint (``start_iter`` x images per rank per iteration);
- ``RunState`` rides in every checkpoint (``checkpointer.checkpointables``, fvcore's public attribute): the
  sampler's seed, and the Python/NumPy/torch RNG states of the process that saved it;
- ``resume_point`` reads both from the last checkpoint before the data loader is built.

Exact (the same final weights as an uninterrupted run) for one process with DATALOADER.NUM_WORKERS 0 and
one aspect-ratio group (the synthetic scenes); with workers or several processes the data order still
resumes exactly, but the workers' augmentation RNGs restart and other ranks restore rank 0's RNG state.
With mixed aspect ratios (COCO) the aspect-ratio grouping consumes indices unevenly, so the position is
right to within one group's buffer.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import torch
from detectron2.data.common import AspectRatioGroupedDataset
from detectron2.data.samplers import TrainingSampler

from pretrain.engine.seeding import rng_state, set_rng_state

STATE_KEY = "ringnce_state"


class ResumableTrainingSampler(TrainingSampler):
    def __init__(self, size: int, seed: int, skip: int = 0):
        super().__init__(size, shuffle=True, seed=seed)
        self.skip = int(skip)

    def __iter__(self):
        yield from itertools.islice(super().__iter__(), self.skip, None)


class RunState:
    """A checkpointable: the sampler seed and the RNG states, restored when the checkpoint is loaded."""

    def __init__(self, sampler_seed: int):
        self.sampler_seed = int(sampler_seed)

    def state_dict(self) -> dict:
        return {"sampler_seed": self.sampler_seed, "rng": rng_state()}

    def load_state_dict(self, state: dict) -> None:
        set_rng_state(state["rng"])


def detach_from_global_rng(loader, seed: int):
    """The torch DataLoader inside Detectron2's train loader draws its workers' base seed from the global
    torch RNG when its iterator starts, lazily, at the first batch: after a resume that draw would land
    after the restored RNG state and shift it.  A generator of its own (``DataLoader.generator``, a public
    attribute) leaves the global stream alone."""
    inner = loader.dataset if isinstance(loader, AspectRatioGroupedDataset) else loader
    if isinstance(inner, torch.utils.data.DataLoader):
        inner.generator = torch.Generator().manual_seed(int(seed))
    return loader


@dataclass
class ResumePoint:
    start_iter: int
    sampler_seed: int | None


def resume_point(output_dir: str | Path) -> ResumePoint | None:
    """Where the run in ``output_dir`` stopped, from its last checkpoint (None: nothing to resume)."""
    tag = Path(output_dir) / "last_checkpoint"
    if not tag.is_file():
        return None
    path = Path(output_dir) / tag.read_text().strip()
    if not path.is_file():
        return None
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = ckpt.get(STATE_KEY, {})
    return ResumePoint(int(ckpt.get("iteration", -1)) + 1, state.get("sampler_seed"))
