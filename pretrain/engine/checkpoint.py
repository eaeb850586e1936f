"""Pretraining checkpoints: written atomically, read with ``torch.load(weights_only=True)``.

A checkpoint holds everything a resumed run needs to continue bit-for-bit: the objective's state (both
encoders, queue/bank), optimizer, LR scheduler, the ring schedule and sampler RNG, global RNG states,
and the position (epoch, next batch within it, global iteration).
"""
from __future__ import annotations

from pathlib import Path

import torch

from pretrain.common import UserError
from pretrain.io import atomic_copy, atomic_torch_save

KIND = "ringnce.pretrain"
FORMAT = 1
LAST = "checkpoint_last.pth"


class CheckpointError(UserError):
    """A missing, foreign or incompatible checkpoint (one sentence)."""


def save_checkpoint(run_dir: Path, state: dict, epoch_copy: int | None = None) -> Path:
    """checkpoint_last.pth, atomically; ``epoch_copy``: also checkpoint_eNNNN.pth, the same file linked (or
    copied), so the state is serialised once."""
    state = {"kind": KIND, "format": FORMAT, **state}
    path = Path(run_dir) / LAST
    atomic_torch_save(state, path)
    if epoch_copy is not None:
        atomic_copy(path, Path(run_dir) / f"checkpoint_e{epoch_copy:04d}.pth")
    return path


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load and check one of our pretraining checkpoints; anything else stops with one sentence."""
    path = Path(path)
    if path.is_dir():
        path = path / LAST
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; pass a run directory or a checkpoint_*.pth written by "
                              "ring-pretrain.")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a wrong or corrupt file
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(e).__name__}: {str(e)[:200]}); "
                              "pass a checkpoint written by ring-pretrain.") from None
    return checked(state, path)


def is_pretrain_checkpoint(state) -> bool:
    return isinstance(state, dict) and state.get("kind") == KIND


def checked(state, path: Path) -> dict:
    """``state`` if it is one of our checkpoints in the format this version reads; else one sentence."""
    if not is_pretrain_checkpoint(state):
        what = state.get("kind", "a plain state dict") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path} is not a ring-pretrain checkpoint (it holds {what}); --resume needs the "
                              f"{LAST} of a ring-pretrain run directory.")
    if state.get("format") != FORMAT:
        raise CheckpointError(f"{path} has checkpoint format {state.get('format')}, this version reads {FORMAT}.")
    return state


def backbone_state_dict(state: dict) -> dict[str, torch.Tensor]:
    """The evaluated backbone's weights (torchvision names) out of a pretraining checkpoint."""
    prefix = state["backbone_prefix"]
    sd = {k[len(prefix):]: v for k, v in state["model"].items() if k.startswith(prefix)}
    if not sd:
        raise CheckpointError(f"the checkpoint has no weights under '{prefix}'.")
    return sd
