"""What a transfer task is (``TransferTask``), the registry that holds them, and the suite's ``Stage``.

A task is one way of scoring a backbone after pretraining (the linear probe, kNN, Detectron2, Meta-Dataset).
It declares, in its own file:
- ``schema``: its section of the suite YAML with defaults (``enabled`` always among them);
- ``stages(section, ctx)``: the stages that evaluate one backbone (a pretraining run, or its random-init twin)
  under ``ctx.dest``; ``prepare(section, ctx)``: stages run once per suite (data conversion);
- ``smoke(section, data)``: its section rewritten to toy size on tiny files in the real formats;
- ``rows(summary)``: how one of its summaries becomes cells of a results table (``table``, ``column``, value);
  ``tables``: the titles of the tables it fills.
``ring-suite``, ``--smoke`` and ``ring-results`` loop over the registry; nothing lists the tasks by hand.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from pretrain.common import Registry, UserError

TASK_REGISTRY = Registry("TRANSFER_TASK", key="transfer task", doc="""Transfer tasks (a suite YAML's sections).

A member is a ``TransferTask`` subclass; one instance is made per use.  The suite YAML has one section per
task, named by the task, whose keys and defaults are the task's ``schema``.""")


class SuiteError(UserError):
    """A suite file or a stage of it that cannot run (one sentence naming the file or the stage's log)."""


@dataclass
class Stage:
    name: str
    cmd: list[str]
    done: Path  # the file whose existence means the stage is complete
    log: Path
    env: dict = field(default_factory=dict)
    kind: str = ""  # pretrain, or the task's kind (lincls, baseline, export, detection, ...)
    key: str = ""  # what makes the stage distinct within its kind (a config, a task, a run)
    needs: tuple = ()  # files other stages make that this one reads (--smoke keeps their makers)
    after: tuple = ()  # files other stages make that must exist before this one starts (a job graph's edges)
    # processes the stage runs as: ``task_cmd`` once per process (torch.distributed from the launcher's
    # environment) where a launcher starts them itself (Slurm: srun tasks); ``cmd`` starts them locally
    tasks: int = 1
    task_cmd: list = field(default_factory=list)
    # a stage that starts its own processes on each node (Detectron2's launch) and can span nodes: the
    # arguments added per node, with {nodes}, {node_rank}, {master_addr}, {master_port} filled in
    node_args: tuple = ()



def pending_makers(stage: Stage, makers: dict[str, Stage]) -> list[Stage]:
    """The stages that make what ``stage`` reads (``needs``, ``after``) and are not complete yet; ``makers``
    maps each planned stage's ``done`` file (as a string) to that stage."""
    return [makers[str(f)] for f in (*stage.needs, *stage.after) if str(f) in makers and not Path(f).exists()]

@dataclass
class EvalContext:
    """Where one backbone's evaluations go: ``run`` the pretraining run (its weights, or its architecture for
    a random-init twin), or ``weights`` a suite ``backbones:`` entry (name, path, arch, prefix) evaluated with
    the suite's pretraining config and ``opts`` (its seed among them); ``dest`` the folder they write under,
    ``tag`` the stages' name suffix."""
    out: Path
    run: Path | None
    dest: Path
    tag: str
    seed: int
    config: str  # the pretraining config (the key that makes a stage distinct in --smoke)
    random_init: bool = False
    weights: dict | None = None
    opts: list = field(default_factory=list)
    estimator: str = ""  # the pretraining run's estimator ("" for a weights file; a random-init twin keeps its run's)

    @property
    def init_flag(self) -> list[str]:
        return ["--random-init"] if self.random_init else []

    def source(self, evaluation: bool = True) -> list[str]:
        """The backbone's arguments to a command (``evaluation``: one that takes ``-c`` for a weights file)."""
        if self.weights is None:
            return [str(self.run), *self.init_flag]
        w = self.weights
        args = ["--weights", w["path"], "-c", self.config] if evaluation else [w["path"]]
        return args + ["--name", w["name"], *self.init_flag] + [a for k in ("arch", "prefix") if w.get(k)
                                                               for a in (f"--{k}", w[k])]

    def kind(self, kind: str) -> str:
        """The stage's kind for --smoke's one-of-each: a baseline, a weights file's evaluation, or ``kind``."""
        return "baseline" if self.random_init else ("weights " + kind if self.weights else kind)


@dataclass
class Row:
    """One cell value of a results table: ``table`` (a key of some task's ``tables``), ``column``, ``value``;
    ``ci``: a per-run CI half-width (Meta-Dataset's episodes)."""
    table: str
    column: str
    value: float
    ci: float = float("nan")


class TransferTask:
    name = ""
    order = 100  # where its tables and rows come among the tasks
    schema: dict = {"enabled": True}
    tables: dict[str, str] = {}  # table key -> title
    # config keys (prefixes end in ".") that are the evaluation's own settings: recorded in its summaries, they
    # make separate columns (30 vs 100 probe epochs), never separate rows
    evaluation_keys: tuple[str, ...] = ()

    def check(self, section: dict, where: str) -> None:
        """Refuse a section that cannot run, before any stage does (one sentence naming ``where``)."""

    @staticmethod
    def applies(section: dict, ctx: EvalContext) -> bool:
        """The section's ``seeds`` and ``estimators`` filters (empty: every one); a random-init twin or a weights
        file is evaluated at every seed the filter keeps, whatever its estimator."""
        seeds, estimators = section.get("seeds") or [ctx.seed], section.get("estimators") or []
        return ctx.seed in seeds and (not estimators or ctx.random_init or not ctx.estimator
                                      or ctx.estimator in estimators)

    def unavailable(self, section: dict) -> list[str]:
        """Optional inputs not installed here, left out of ``section`` (and named)."""
        return []

    def prepare(self, section: dict, out: Path) -> list[Stage]:
        return []

    def stages(self, section: dict, ctx: EvalContext) -> list[Stage]:
        return []

    def smoke(self, section: dict, data: Path) -> None:
        """Rewrite ``section`` in place for ``ring-suite --smoke`` (tiny files under ``data``)."""

    def rows(self, summary: dict) -> list[Row]:
        return []


def check_estimators(section: dict, where: str, task: str) -> None:
    """A section's ``estimators`` filter names registered estimators (a typo stops before any stage)."""
    from pretrain.contrastive.estimators import estimator_names

    unknown = [e for e in section.get("estimators") or [] if e not in estimator_names()]
    if unknown:
        raise SuiteError(f"{where}: '{task}.estimators' names '{unknown[0]}', which is not an estimator; choose "
                         f"among {', '.join(estimator_names())} (or leave it empty for every one).")


def check_overrides(overrides: list, where: str, what: str) -> None:
    """A suite's KEY VALUE overrides for ring-pretrain's config (keys, types, values), checked when it loads."""
    from pretrain.config import load_config

    try:
        load_config(None, list(overrides))
    except UserError as e:
        raise SuiteError(f"{where}: {what}: {e}") from None


def py(module: str, *args) -> list[str]:
    return [sys.executable, "-m", module, *map(str, args)]
