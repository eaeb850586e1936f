"""Transfer tasks (``TASK_REGISTRY``): ``base.py`` defines them; every other module in this package is imported
here, so a new task is one new file that registers itself."""
from __future__ import annotations

import importlib
import pkgutil

from pretrain.common import load_plugins
from transfer.tasks.base import TASK_REGISTRY, EvalContext, Row, Stage, SuiteError, TransferTask

for _m in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["TASK_REGISTRY", "EvalContext", "Row", "Stage", "SuiteError", "TransferTask", "tasks", "enabled_tasks", "table_titles"]


def tasks() -> list[TransferTask]:
    """One instance of every registered task (plugins included), in their ``order``."""
    load_plugins()
    return sorted((TASK_REGISTRY.get(n)() for n in TASK_REGISTRY.in_order()), key=lambda t: (t.order, t.name))


def table_titles() -> dict[str, str]:
    """Every results table, in task order: key -> title."""
    out: dict[str, str] = {}
    for t in tasks():
        for key, title in t.tables.items():
            out.setdefault(key, title)
    return out



def enabled_tasks(suite: dict) -> list[TransferTask]:
    """The tasks whose section of ``suite`` is enabled."""
    return [t for t in tasks() if suite[t.name]["enabled"]]
