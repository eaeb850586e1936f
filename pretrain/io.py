"""Atomic file writes and the run-directory logs (metrics.jsonl, summary.json)."""
from __future__ import annotations

import errno
import functools
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pretrain.common import UserError


FULL_DISK = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
# what torch.save raises when its writer cannot write (the errno is lost on the way)
TORCH_WRITE_FAILED = ("unexpected pos", "PytorchStreamWriter failed", "file write failed")


def is_full_disk(e: BaseException) -> bool:
    """A write that failed for lack of room: a full disk, a quota or a file-size limit."""
    if isinstance(e, OSError):
        return e.errno in FULL_DISK
    return isinstance(e, RuntimeError) and any(m in str(e) for m in TORCH_WRITE_FAILED)


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temp path in the same folder; on success rename it over ``path`` (never a half file).  A write
    that fails for lack of room is one sentence (``UserError``); the file it replaces is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        if not is_full_disk(e):
            raise
        raise UserError(f"could not write {path}: no room left (a full disk, a quota or a file-size limit); "
                        f"free space on {path.parent} and retry"
                        f"{' (the previous copy is untouched)' if path.exists() else ''}.") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """dst becomes a hard link to src (a copy where links are not possible), never a half file."""
    import shutil

    with atomic_path(dst) as tmp:
        os.unlink(tmp)
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


class RunDirectoryLock:
    """An exclusive lock on a run directory (``.lock``, ``flock``) held while a process writes into it, so that
    two processes never interleave one run's metrics and checkpoints.  The kernel drops it when the process
    ends, crash included; the file records the holder's pid."""

    NAME = ".lock"

    def __init__(self, run_dir: str | os.PathLike):
        import fcntl

        from pretrain.common import UserError

        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        self._file = open(run_dir / self.NAME, "a+")
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            holder = self._file.read().strip() or "another process"
            self._file.close()
            raise UserError(f"{run_dir} is in use by pid {holder} (its {self.NAME} is locked); wait for that run "
                            "to end or write to another -o directory.") from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(str(os.getpid()))
        self._file.flush()

    def release(self) -> None:
        self._file.close()  # closing the descriptor releases the flock


class MetricsLog:
    """Appends one JSON object per line to ``metrics.jsonl`` (line-buffered, survives a crash)."""

    def __init__(self, path: str | os.PathLike, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled

    def write(self, **record: Any) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps({k: plain(v) for k, v in record.items()}) + "\n")


def plain(v: Any) -> Any:
    """A 0-dim tensor (or numpy scalar) as its Python number; anything else unchanged."""
    if hasattr(v, "item") and getattr(v, "ndim", 0) == 0:
        return v.item()
    return v


@functools.lru_cache(maxsize=1)
def code_version() -> dict:
    """The code behind a result: ringnce's version, and the git commit when it runs from a checkout
    (``+dirty`` when tracked files were modified).  Looked up once per process."""
    import importlib.metadata as md
    import subprocess

    try:
        version = md.version("ringnce")
    except md.PackageNotFoundError:
        version = "unknown"
    root, commit = Path(__file__).resolve().parents[1], None
    if (root / ".git").exists():
        try:
            head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                  timeout=10).stdout.strip()
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=10).stdout.strip()
            commit = (head + ("+dirty" if dirty else "")) if head else None
        except (OSError, subprocess.SubprocessError):
            commit = None
    return {"ringnce_version": version, "git_commit": commit}


def write_summary(run_dir: str | os.PathLike, *, stage: str, method: str, estimator: str, backbone: str,
                  dataset: str, seed: int, metrics: dict, **extra: Any) -> dict:
    """The table-ready result of a stage: summary.json of its run directory (README: the run directory)."""
    summary = {"stage": stage, "method": method, "estimator": estimator, "backbone": backbone,
               "dataset": dataset, "seed": seed, "metrics": {k: plain(v) for k, v in metrics.items()},
               **dict(code_version())}
    summary.update(extra)
    atomic_write_json(Path(run_dir) / "summary.json", summary)
    return summary
