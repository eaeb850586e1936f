"""The datasets ring-train-net knows by name, written on first use: each module of ``transfer/detection/datasets/``
(``scenes``, ``trees``) declares its set here with its name prefix, the environment variable that says where its
files go, and the function that writes them.  No Detectron2 import: the suite reads this table too."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable


@dataclass(frozen=True)
class BuiltinSet:
    prefix: str                                   # every split's name starts with it, e.g. "trees_"
    env: str                                      # the folder, when set (the suite sets it under OUT)
    folder: str                                   # the folder otherwise, relative to the working directory
    ensure: Callable[[Path], dict[str, Path]]     # writes the splits once; {split name: folder}
    what: str                                     # one phrase for messages
    keypoints: tuple | None = None                # (names, flip map) of its keypoint splits


BUILTIN_SETS: dict[str, BuiltinSet] = {}


def declare(s: BuiltinSet) -> BuiltinSet:
    BUILTIN_SETS[s.prefix] = s
    return s


def declared() -> dict[str, BuiltinSet]:
    """Every built-in set, {prefix: set}, after importing every module of ``transfer.detection.datasets``."""
    import importlib
    import pkgutil

    import transfer.detection.datasets as package

    for m in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{m.name}")
    return BUILTIN_SETS


def builtin_set(dataset: str) -> BuiltinSet | None:
    """The built-in set a dataset name belongs to, or None."""
    return next((s for p, s in declared().items() if dataset.startswith(p)), None)


def suite_folders(out: Path) -> dict[str, str]:
    """{environment variable: folder under a suite's OUT} for every built-in set."""
    return {s.env: str(out / Path(s.folder).name) for s in declared().values()}
