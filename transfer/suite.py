"""ring-suite: pretraining -> every transfer task (transfer/tasks/: linear probe, kNN, Detectron2, Meta-Dataset)
-> tables, in one command.

    ring-suite                                  # the embedded default: a small complete suite on CPU
    ring-suite transfer/suites/paper_cifar.yaml -o runs/paper_cifar
    ring-suite cpu_evidence --jobs 2            # two independent stages at once, cores/2 threads each
    ring-suite paper_imagenet -o /shared/runs/in --launcher slurm --partition gpu --gpus-per-node 8 --time 3-00:00:00

Every stage writes a run directory and is skipped when its result (summary.json, or the exported .pkl)
already exists, so an interrupted suite resumes where it stopped: a half-finished pretraining run
resumes from its last checkpoint, a half-finished Detectron2 run from its ``last_checkpoint`` (model,
optimizer, iteration, data position and RNG states; ``--resume``, which starts from MODEL.WEIGHTS when
there is no checkpoint).  A stage that fails stops the suite with a message naming the stage
and its log; everything completed is kept.  Stages run as separate processes: pretraining through
torchrun when ``pretrain.nproc_per_node`` > 1, Detectron2 through its launcher (``detection.num_gpus``);
``--jobs N`` runs up to N of them at once, each after the stages it reads (transfer/local_stages.py).

Layout of OUT:
    pretrain/<dataset>/<objective>_<estimator>_s<seed>/   ring-pretrain run; lincls/, model_final.pkl,
                                                           det_<task>/, meta_dataset/ inside it
    baselines/<dataset>/<rgb|lab>_random_init_s<seed>/     the same evaluations of the run's architecture,
                                                           untrained at that seed (``random_init: true``)
    backbones/<dataset>/<name>_s<seed>/                    the same evaluations of each ``backbones:`` entry
    md_records/                                            converted Meta-Dataset sources
    results/tables.md, results/deltas.png                  ring-results over OUT
    <each run directory above>/curves.png                  its pretraining loss, kNN top-1 and probe loss
"""
from __future__ import annotations

import copy
import dataclasses
import re
import sys
import time
from collections import Counter
from pathlib import Path

import yaml
from tqdm import tqdm

from pretrain.common import check_keys, cli_main, command_parser, find_file
from transfer.local_stages import run_concurrently, run_stage
from transfer.tasks import EvalContext, Stage, SuiteError, enabled_tasks, tasks

SUITES = Path(__file__).resolve().parent / "suites"

# The suite's own keys; every transfer task adds its section (transfer/tasks/, its ``schema``).
CORE_SCHEMA = {
    "name": "default",
    "device": "auto",
    "pretrain": {"config": "cpu_small", "datasets": [""], "objectives": ["moco"], "estimators": ["nce", "ring"],
                 "seeds": [0], "overrides": [], "nproc_per_node": 1,
                 "estimator_seeds": None},  # {estimator: [seeds]}: its own seeds instead of `seeds`
    "random_init": True,  # the paired baseline: every evaluation of each architecture untrained, at every seed
    # weights from elsewhere, through every enabled task beside the runs: [{name, path, arch, prefix}], evaluated at
    # every seed of pretrain.seeds with the pretraining config's data and settings (paired with the runs' seeds)
    "backbones": [],
}
BACKBONE_SCHEMA = {"name": "", "path": "", "arch": "", "prefix": ""}


def schema() -> dict:
    return {**CORE_SCHEMA, **{t.name: t.schema for t in tasks()}}


def _check(user: dict, ref: dict, where: str, prefix: str = "") -> dict:
    """The schema's defaults updated with the user's values; unknown keys are one sentence."""
    check_keys(user, ref, where, prefix, error=SuiteError)
    return _with_defaults(user or {}, ref)


def _with_defaults(user: dict, ref: dict) -> dict:
    out = copy.deepcopy(ref)
    for k, v in user.items():
        out[k] = _with_defaults(v, ref[k]) if isinstance(ref[k], dict) else v
    return out


def _check_estimators(P: dict, where: str) -> None:
    """``estimators: all`` runs every registered estimator; a name nobody registered stops here, before any stage."""
    from pretrain.contrastive.estimators import ESTIMATOR_REGISTRY, estimator_names
    from pretrain.contrastive.objectives import OBJECTIVE_REGISTRY

    if P["estimators"] == ["all"]:
        P["estimators"] = estimator_names()
    for key, reg in (("estimators", ESTIMATOR_REGISTRY), ("objectives", OBJECTIVE_REGISTRY)):
        unknown = [n for n in P[key] if n not in reg]
        if unknown:
            raise SuiteError(f"{where}: 'pretrain.{key}' names '{unknown[0]}', which is not registered; choose from "
                             f"{', '.join(reg.names())}" + (" or all" if key == "estimators" else "") + ".")
    own = P["estimator_seeds"]
    if own is None:
        return
    if not isinstance(own, dict) or not all(isinstance(v, list) and v for v in own.values()):
        raise SuiteError(f"{where}: 'pretrain.estimator_seeds' must map estimators to lists of seeds, e.g. "
                         f"{{nce: [0, 1, 2, 3, 4]}}, not {own!r}.")
    unknown = sorted(set(own) - set(P["estimators"]))
    if unknown:
        raise SuiteError(f"{where}: 'pretrain.estimator_seeds' names {', '.join(unknown)}, which "
                         f"'pretrain.estimators' does not run ({', '.join(P['estimators'])}).")


def _check_pretraining_configs(suite: dict, where: str) -> None:
    """Every pretraining stage's config as ring-pretrain will read it (the file, the overrides, each estimator's
    own settings), so that a typo stops the suite (and --dry-run) before the first stage, not midway."""
    from pretrain.common import UserError
    from pretrain.config import load_config
    from pretrain.contrastive.estimators import build_estimator

    P = suite["pretrain"]
    for ds in P["datasets"]:
        for obj in P["objectives"]:
            for est in P["estimators"]:
                name = P["config"].format(dataset=ds, objective=obj, estimator=est)
                opts = ["OBJECTIVE.NAME", obj, "OBJECTIVE.ESTIMATOR", est, *run_opts(suite, ds, P["seeds"][0])]
                try:
                    build_estimator(load_config(name, opts))
                except UserError as e:
                    raise SuiteError(f"{where}: the pretraining stage {ds + ' ' if ds else ''}{obj}-{est} would "
                                     f"stop: {e}") from None


def _resnet_of(entry: dict, where: str) -> tuple[int, int]:
    """(depth, stem width) of a ``backbones:`` entry's file, read once when the suite loads: a file holding no
    ResNet (or one its arch/prefix do not fit) stops the suite here, not after the pretraining stages."""
    from pretrain.common import UserError
    from pretrain.evaluation.pretrained import fitting_backbone
    from pretrain.modeling.weight_formats import depth_of, find_backbone, infer_arch

    try:
        found = find_backbone(entry["path"], entry["prefix"] or None)
        arch = infer_arch(found.state_dict, entry["path"], entry["arch"] or None)
        fitting_backbone(found, arch)  # what every stage will check, checked once before any runs
    except UserError as e:
        raise SuiteError(f"{where}: backbone '{entry['name']}': {e}") from None
    return depth_of(found.state_dict), arch.width


def _check_backbones(entries, where: str) -> list[dict]:
    """Each ``backbones:`` entry named (a folder name, unique) and its file present, before any stage runs."""
    if not isinstance(entries, list):
        raise SuiteError(f"{where}: 'backbones' must be a list of {{name, path}} entries, not {entries!r}.")
    out = []
    for e in entries:
        if not isinstance(e, dict):
            raise SuiteError(f"{where}: each 'backbones' entry is {{name: ..., path: ...}}, not {e!r}.")
        check_keys(e, BACKBONE_SCHEMA, where, "backbones[].", error=SuiteError)
        e = {**BACKBONE_SCHEMA, **{k: str(v) for k, v in e.items()}}
        if not e["name"] or not e["path"]:
            raise SuiteError(f"{where}: every 'backbones' entry needs a name and a path (got {e}).")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", e["name"]):
            raise SuiteError(f"{where}: backbone name '{e['name']}' names a folder: use letters, digits, '_', '-', "
                             "'.', '+'.")
        if not Path(e["path"]).is_file():
            raise SuiteError(f"{where}: backbone '{e['name']}': {e['path']} does not exist; give the path of its "
                             "weights file (relative to where ring-suite runs).")
        e["depth"], e["width"] = _resnet_of(e, where)
        out.append(e)
    names = [e["name"] for e in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SuiteError(f"{where}: backbone name '{dup[0]}' is used twice; each entry's name is its rows' name.")
    return out


def load_suite(path: str | Path | None) -> tuple[dict, str]:
    if path is None:
        path = SUITES / "default.yaml"
    p = find_file(path, SUITES, "suite file", error=SuiteError)
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise SuiteError(f"{p}: not valid YAML ({e}).") from None
    if isinstance(raw.get("pretrain"), dict) and raw["pretrain"].get("estimators") == "all":
        raw["pretrain"]["estimators"] = ["all"]  # the one word a list of estimators may be
    suite = _check(raw, schema(), str(p))
    _check_estimators(suite["pretrain"], str(p))
    _check_pretraining_configs(suite, str(p))
    suite["backbones"] = _check_backbones(suite["backbones"], str(p))
    for t in tasks():
        t.check(suite[t.name], str(p))
    return suite, str(p)


def input_streams(objective: str) -> str:
    """What a random-init baseline needs to match: the objective's input (CMC: two Lab streams; RGB else)."""
    from pretrain.contrastive.objectives import objective_class

    return objective_class(objective).input_streams


def evaluations(suite: dict, ctx: EvalContext) -> list[Stage]:
    """Every enabled task's stages for one backbone (a pretraining run, or its random-init twin); each comes
    after the run it reads (its summary: the run is complete)."""
    after = (ctx.run / "summary.json",) if ctx.run is not None else ()
    return [dataclasses.replace(st, after=st.after + after) for t in enabled_tasks(suite)
            for st in t.stages(suite[t.name], ctx)]


def run_opts(suite: dict, ds: str, seed: int) -> list:
    """The overrides every backbone of one dataset and seed shares: the seed, the device, the suite's own
    overrides and (``--smoke``) the tiny files' folder."""
    P = suite["pretrain"]
    device = [] if suite["device"] == "auto" else ["DEVICE", suite["device"]]
    root = ["DATA.ROOT", P["data_roots"][ds]] if ds in P.get("data_roots", {}) else []
    return ["SEED", seed, "LOG.PROGRESS", "False", *device, *P["overrides"], *root]


def pretrain_stage(suite: dict, out: Path, ds: str, obj: str, est: str, seed: int) -> tuple[Stage, Path, str, str]:
    """(the ring-pretrain stage of one run, its run directory, its config, its tag)."""
    P = suite["pretrain"]
    cfg = P["config"].format(dataset=ds, objective=obj, estimator=est)
    run = out / "pretrain" / (ds or "default") / f"{obj}_{est}_s{seed}"
    opts = ["OBJECTIVE.NAME", obj, "OBJECTIVE.ESTIMATOR", est, *run_opts(suite, ds, seed)]
    launcher = (["-m", "torch.distributed.run", "--nproc_per_node", str(P["nproc_per_node"])]
                if P["nproc_per_node"] > 1 else [])
    args = ["-m", "pretrain.cli", "-c", cfg, "-o", str(run), "--auto-resume", *map(str, opts)]
    tag = f"{ds + ' ' if ds else ''}{obj}-{est} seed {seed}"
    return Stage(f"pretrain {tag}", [sys.executable, *launcher, *args], run / "summary.json", run / "pretrain.log",
                 kind="pretrain", key=f"{cfg} {est}" if est in P.get("extra_estimators", []) else cfg,
                 tasks=P["nproc_per_node"], task_cmd=[sys.executable, *args]), run, cfg, tag


def external_evaluations(suite: dict, out: Path, ds: str) -> list[Stage]:
    """Every ``backbones:`` entry through every enabled task, at every seed, with the runs' config and overrides."""
    P = suite["pretrain"]
    cfg = P["config"].format(dataset=ds, objective=P["objectives"][0], estimator=P["estimators"][0])
    stages = []
    for seed in P["seeds"]:
        for w in suite["backbones"]:
            dest = out / "backbones" / (ds or "default") / f"{w['name']}_s{seed}"
            tag = f"{ds + ' ' if ds else ''}{w['name']} seed {seed}"
            stages += evaluations(suite, EvalContext(out, None, dest, tag, seed, cfg, weights=w,
                                                     opts=[str(o) for o in run_opts(suite, ds, seed)]))
    return stages


def plan(suite: dict, out: Path) -> list[Stage]:
    P = suite["pretrain"]
    stages: list[Stage] = [st for t in enabled_tasks(suite) for st in t.prepare(suite[t.name], out)]
    for ds in P["datasets"]:
        baselines = {}  # (input streams, seed) -> the first pretraining run with them
        for obj in P["objectives"]:
            for est in P["estimators"]:
                for seed in (P["estimator_seeds"] or {}).get(est, P["seeds"]):
                    stage, run, cfg, tag = pretrain_stage(suite, out, ds, obj, est, seed)
                    stages.append(stage)
                    stages += evaluations(suite, EvalContext(out, run, run, tag, seed, cfg, estimator=est))
                    baselines.setdefault((input_streams(obj), seed), (run, cfg))
            if ds == P["datasets"][0] and obj == P["objectives"][0]:  # --smoke: every other registered estimator
                stages += [pretrain_stage(suite, out, ds, obj, est, P["seeds"][0])[0]
                           for est in P.get("extra_estimators", [])]
        stages += external_evaluations(suite, out, ds)
        if suite["random_init"]:
            for (streams, seed), (run, cfg) in baselines.items():
                dest = out / "baselines" / (ds or "default") / f"{streams}_random_init_s{seed}"
                tag = f"{ds + ' ' if ds else ''}random-init {streams} seed {seed}"
                stages += evaluations(suite, EvalContext(out, run, dest, tag, seed, cfg, random_init=True))
    return stages


def drop_unavailable(suite: dict) -> list[str]:
    """Optional inputs whose data is not installed are left out (and said so)."""
    return [s for t in enabled_tasks(suite) for s in t.unavailable(suite[t.name])]


def run_suite(suite: dict, out: Path, progress: bool = True, select=None, jobs: int = 1) -> str:
    """Runs the stages not yet complete (``jobs`` at once at most), then writes the tables; ``select``
    filters the planned stages."""
    out.mkdir(parents=True, exist_ok=True)
    gone = drop_unavailable(suite)
    for s in gone:
        print(f"[ring-suite] source '{s}' is not installed here; leaving it out (see README: offline data).")
    stages = plan(suite, out)
    if select:
        stages = select(stages)
    todo = [s for s in stages if not s.done.exists()]
    print(f"[ring-suite] {suite['name']}: {len(stages)} stages, {len(stages) - len(todo)} already complete -> {out}")
    t0 = time.perf_counter()
    with tqdm(total=len(stages), initial=len(stages) - len(todo), desc="suite", disable=not progress,
              dynamic_ncols=True) as bar:
        def done(stage: Stage, secs: float) -> None:
            tqdm.write(f"[ring-suite] done: {stage.name} ({secs:.0f} s)")
            bar.update(1)

        if jobs > 1:
            run_concurrently(todo, stages, jobs, lambda now: bar.set_postfix_str(", ".join(s.name for s in now)), done)
        else:
            for stage in todo:
                bar.set_postfix_str(stage.name)
                done(stage, run_stage(stage))
    text, plotted = write_tables(out)
    print(text)
    print(f"[ring-suite] finished in {time.perf_counter() - t0:.0f} s; tables: {out / 'results' / 'tables.md'}"
          + (f", plot: {out / 'results' / 'deltas.png'}" if plotted else ""))
    return text


RESULT_FOLDERS = ("pretrain", "baselines", "backbones")


def write_tables(out: Path) -> tuple[str, bool]:
    """results/tables.md and results/deltas.png from every summary under ``out`` (whichever stages completed),
    and each run directory's curves.png; returns the markdown and whether the Delta plot was drawn."""
    from pretrain.io import atomic_write_text
    from transfer.results import make_tables, plot_deltas, render

    from transfer.curves import plot_suite

    folders = [out / d for d in RESULT_FOLDERS if (out / d).exists()]
    tables = make_tables(folders)
    text = render(tables, "md")
    atomic_write_text(out / "results" / "tables.md", text)
    plot_suite(folders)  # curves.png in every run directory
    return text, plot_deltas(tables, out / "results" / "deltas.png")


def launch_slurm(stages: list[Stage], out: Path, args) -> int:
    """--launcher slurm: every stage not complete nor queued becomes a Slurm job (transfer/slurm.py)."""
    from transfer import slurm

    opts = slurm.slurm_options(args)  # every flag checked before anything is submitted
    out.mkdir(parents=True, exist_ok=True)
    tables = Stage("tables", [sys.executable, "-m", "transfer.suite", "-o", str(out), "--tables"],
                   out / "results" / "tables.md", out / "logs" / "tables.log", kind="tables")
    submitted = slurm.submit(stages, out, opts, tables)
    print(f"[ring-suite] {len(stages)} stages, {sum(s.done.exists() for s in stages)} complete, {len(submitted)} "
          f"queued or running; ring-suite ... --status shows them")
    return 0


def print_status(stages: list[Stage], out: Path) -> int:
    from transfer import slurm

    rows = slurm.status(stages, out)
    width = max(len(r[0]) for r in rows) if rows else 0
    for name, state, detail in rows:
        print(f"{name:<{width}}  {state:<13}  {detail}")
    counts = Counter(state for _, state, _ in rows)
    print(f"[ring-suite] {len(rows)} stages: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    return 0


@cli_main("ring-suite")
def main(argv: list[str] | None = None) -> int:
    p = command_parser("ring-suite", __doc__, output="output directory (default: runs/<suite name>)")
    p.add_argument("suite", nargs="?", default=None, help="suite YAML or a shipped name (default: the embedded one)")
    p.add_argument("--dry-run", action="store_true", help="list the stages and whether each is complete")
    p.add_argument("--smoke", action="store_true", help="every distinct stage once, at toy size on tiny files in "
                                                        "each dataset's real format, through the same launchers")
    p.add_argument("--launcher", default="local", choices=["local", "slurm"],
                   help="local: the stages on this machine, one after another or --jobs at once (default); slurm: "
                        "every stage a Slurm job, with dependencies (submitit)")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="local launcher: up to N independent stages at once, each with cores/N threads (default 1)")
    p.add_argument("--status", action="store_true", help="every stage's state: done, queued/running (job id), "
                                                          "failed (log), not submitted")
    p.add_argument("--tables", action="store_true", help="only write the tables (results/tables.md, deltas.png) "
                                                          "from the stages complete under -o; run nothing")
    p.add_argument("--no-progress", action="store_true")
    from transfer.slurm import add_slurm_arguments

    add_slurm_arguments(p)
    args = p.parse_args(argv)
    if args.tables:  # what the Slurm launcher's last job runs; needs no suite, only its output directory
        if not args.output or not Path(args.output).is_dir():
            raise SuiteError(f"--tables reads a suite's output: give -o with an existing directory "
                             f"(got {args.output!r}).")
        text, _ = write_tables(Path(args.output))
        print(text)
        return 0
    from transfer.slurm import slurm_flags_given

    stray = slurm_flags_given(args) if args.launcher == "local" and not (args.dry_run or args.status) else []
    if stray:  # before any stage runs: the user meant the cluster, not this machine
        raise SuiteError(f"{stray[0]} is a Slurm setting: add --launcher slurm to submit the suite to Slurm, or drop "
                         f"{', '.join(stray)} to run it here.")
    if args.jobs < 1:
        raise SuiteError(f"--jobs {args.jobs}: give the number of stages to run at once, 1 or more.")
    if args.jobs > 1 and args.launcher != "local":
        raise SuiteError("--jobs is the local launcher's: with --launcher slurm independent stages already run at "
                         "once as separate jobs; drop --jobs.")
    suite, path = load_suite(args.suite)
    out = Path(args.output or f"runs/{Path(path).stem}{'_smoke' if args.smoke else ''}")
    select = None
    if args.smoke:
        from transfer.smoke import distinct, make_smoke

        suite, select = make_smoke(suite, out), distinct
    if args.dry_run:
        drop_unavailable(suite)
        stages = plan(suite, out)
        for s in select(stages) if select else stages:
            print(f"[{'x' if s.done.exists() else ' '}] {s.name}: {' '.join(s.cmd[1:])}")
        return 0
    if args.status or args.launcher == "slurm":
        drop_unavailable(suite)
        stages = plan(suite, out)
        stages = select(stages) if select else stages
        return print_status(stages, out) if args.status else launch_slurm(stages, out, args)
    run_suite(suite, out, progress=not args.no_progress, select=select, jobs=args.jobs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
