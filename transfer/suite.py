"""ring-suite: pretraining -> linear evaluation -> export -> Detectron2 -> Meta-Dataset -> tables, in one command.

    ring-suite                                  # the embedded default: a small complete suite on CPU
    ring-suite transfer/suites/paper_cifar.yaml -o runs/paper_cifar
    ring-suite paper_imagenet -o /shared/runs/in --slurm partition=gpu,gpus_per_node=8,timeout_min=4320

Every stage writes a run directory and is skipped when its result (summary.json, or the exported .pkl)
already exists, so an interrupted suite resumes where it stopped: a half-finished pretraining run
resumes from its last checkpoint, a half-finished Detectron2 run from its ``last_checkpoint`` (model,
optimizer, iteration, data position and RNG states; ``--resume``, which starts from MODEL.WEIGHTS when
there is no checkpoint).  A stage that fails stops the suite with a message naming the stage
and its log; everything completed is kept.  Stages run as separate processes: pretraining through
torchrun when ``pretrain.nproc_per_node`` > 1, Detectron2 through its launcher (``detection.num_gpus``).

Layout of OUT:
    pretrain/<dataset>/<objective>_<estimator>_s<seed>/   ring-pretrain run; lincls/, model_final.pkl,
                                                           det_<task>/, meta_dataset/ inside it
    baselines/<dataset>/<rgb|cmc>_random_init_s<seed>/     the same evaluations of the run's architecture,
                                                           untrained at that seed (``random_init: true``)
    md_records/                                            converted Meta-Dataset sources
    results/tables.md, results/deltas.png                  ring-results over OUT
"""
from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from tqdm import tqdm

from pretrain.common import UserError, check_keys, cli_main, command_parser, find_file

SUITES = Path(__file__).resolve().parent / "suites"

SCHEMA = {
    "name": "default",
    "device": "auto",
    "pretrain": {"config": "cpu_small", "datasets": [""], "objectives": ["moco"], "estimators": ["nce", "ring"],
                 "seeds": [0], "overrides": [], "nproc_per_node": 1,
                 "estimator_seeds": None},  # {estimator: [seeds]}: its own seeds instead of `seeds`
    "random_init": True,  # the paired baseline: every evaluation of each architecture untrained, at every seed
    "lincls": {"enabled": True, "overrides": []},
    "detection": {"enabled": True, "num_gpus": 1, "tasks": [], "seeds": []},  # seeds: [] = every pretraining seed
    "meta_dataset": {"enabled": True, "records": "", "convert": [], "optional": [], "max_per_class": 600, "seeds": [],
                     "sources": [], "episodes": 600, "protocol": "variable", "classifier": "ncc-cosine",
                     "image_size": 0},
}
TASK_SCHEMA = {"name": "", "config": "", "overrides": []}


class SuiteError(UserError):
    """A suite file or a stage of it that cannot run (one sentence naming the file or the stage's log)."""


def _check(user: dict, ref: dict, where: str, prefix: str = "") -> dict:
    """The schema's defaults updated with the user's values; unknown keys are one sentence."""
    check_keys(user, ref, where, prefix, error=SuiteError)
    return _with_defaults(user or {}, ref)


def _with_defaults(user: dict, ref: dict) -> dict:
    out = copy.deepcopy(ref)
    for k, v in user.items():
        out[k] = _with_defaults(v, ref[k]) if isinstance(ref[k], dict) else v
    return out


def _check_estimator_seeds(P: dict, where: str) -> None:
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


def load_suite(path: str | Path | None) -> tuple[dict, str]:
    if path is None:
        path = SUITES / "default.yaml"
    p = find_file(path, SUITES, "suite file", error=SuiteError)
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise SuiteError(f"{p}: not valid YAML ({e}).") from None
    suite = _check(raw, SCHEMA, str(p))
    _check_estimator_seeds(suite["pretrain"], str(p))
    suite["detection"]["tasks"] = [_check(t, TASK_SCHEMA, str(p), "detection.tasks[].")
                                   for t in suite["detection"]["tasks"]]
    for t in suite["detection"]["tasks"]:
        if not t["name"] or not t["config"]:
            raise SuiteError(f"{p}: every detection task needs a name and a config.")
    return suite, str(p)


@dataclass
class Stage:
    name: str
    cmd: list[str]
    done: Path  # the file whose existence means the stage is complete
    log: Path
    env: dict = field(default_factory=dict)
    kind: str = ""  # convert | pretrain | lincls | baseline | export | detection | meta_dataset
    key: str = ""  # what makes the stage distinct within its kind (a config, a task, a run)


def _py(module: str, *args) -> list[str]:
    return [sys.executable, "-m", module, *map(str, args)]


def _arch(objective: str) -> str:
    """What a random-init baseline needs to match: CMC's two Lab streams, or one RGB ResNet."""
    return "cmc" if objective == "cmc" else "rgb"


def _evaluations(suite: dict, out: Path, run: Path, dest: Path, tag: str, seed: int, records: Path, cfg: str,
                 random_init: bool = False) -> list[Stage]:
    """The evaluation stages of one pretraining run (lincls, export + Detectron2, Meta-Dataset), written under
    ``dest``; with ``random_init``, of the run's architecture untrained at its seed (the paired baseline)."""
    L, D, M = suite["lincls"], suite["detection"], suite["meta_dataset"]
    flag = ["--random-init"] if random_init else []
    kind = "baseline" if random_init else ""
    stages = []
    if L["enabled"]:
        lin = dest / "lincls"
        stages.append(Stage(f"lincls {tag}", _py("pretrain.lincls", run, *flag, "-o", lin, *L["overrides"]),
                            lin / "summary.json", dest / "lincls.log", kind=kind or "lincls", key=cfg))
    if D["enabled"] and D["tasks"] and seed in (D["seeds"] or [seed]):
        pkl = dest / "model_final.pkl"
        stages.append(Stage(f"export {tag}", _py("transfer.detection.export", run, *flag, "-o", pkl), pkl,
                            dest / "export.log", kind="export", key=str(dest)))
        for t in D["tasks"]:
            det = dest / f"det_{t['name']}"
            cmd = _py("transfer.detection.train_net", "--config-file", t["config"], "--num-gpus", D["num_gpus"],
                      "--resume", "-o", det, "MODEL.WEIGHTS", pkl, *t["overrides"])
            stages.append(Stage(f"{t['name']} {tag}", cmd, det / "summary.json", det.with_suffix(".log"),
                                {"RINGNCE_SCENES": str(out / "scenes"), **D.get("env", {})},
                                kind=kind or "detection", key=t["config"] + (" baseline" if random_init else "")))
    if M["enabled"] and M["sources"] and seed in (M["seeds"] or [seed]):
        md = dest / "meta_dataset"
        cmd = _py("meta_dataset.cli", run, *flag, "--records", records, "--sources", *M["sources"], "--episodes",
                  M["episodes"], "--protocol", M["protocol"], "--classifier", M["classifier"], "-o", md, "--quiet",
                  *(["--image-size", M["image_size"]] if M["image_size"] else []))
        stages.append(Stage(f"meta-dataset {tag}", cmd, md / "summary.json", dest / "meta_dataset.log",
                            kind=kind or "meta_dataset", key="meta_dataset" + (" baseline" if random_init else "")))
    return stages


def plan(suite: dict, out: Path) -> list[Stage]:
    P, M = suite["pretrain"], suite["meta_dataset"]
    stages: list[Stage] = []
    records = Path(M["records"]) if M["records"] else out / "md_records"
    if M["enabled"]:
        for src in M["convert"]:
            stages.append(Stage(f"convert {src}", _py("meta_dataset.convert", src, "-o", records, "--max-per-class",
                                                      M["max_per_class"]),
                                records / src / "dataset_spec.json", out / "logs" / f"convert_{src}.log",
                                kind="convert", key=src))
    device = [] if suite["device"] == "auto" else ["DEVICE", suite["device"]]
    for ds in P["datasets"]:
        baselines = {}  # (architecture, seed) -> the first pretraining run with it
        for obj in P["objectives"]:
            for est in P["estimators"]:
                for seed in (P["estimator_seeds"] or {}).get(est, P["seeds"]):
                    cfg = P["config"].format(dataset=ds, objective=obj, estimator=est)
                    run = out / "pretrain" / (ds or "default") / f"{obj}_{est}_s{seed}"
                    opts = ["OBJECTIVE.NAME", obj, "OBJECTIVE.ESTIMATOR", est, "SEED", seed, "LOG.PROGRESS", "False",
                            *device, *P["overrides"]]
                    if ds in P.get("data_roots", {}):  # set by --smoke: its tiny files
                        opts += ["DATA.ROOT", P["data_roots"][ds]]
                    launcher = (["-m", "torch.distributed.run", "--nproc_per_node", str(P["nproc_per_node"])]
                                if P["nproc_per_node"] > 1 else [])
                    cmd = ([sys.executable, *launcher, "-m", "pretrain.cli"] + ["-c", cfg, "-o", str(run),
                                                                              "--auto-resume", *map(str, opts)])
                    tag = f"{ds + ' ' if ds else ''}{obj}-{est} seed {seed}"
                    stages.append(Stage(f"pretrain {tag}", cmd, run / "summary.json", run / "pretrain.log",
                                        kind="pretrain", key=cfg))
                    stages += _evaluations(suite, out, run, run, tag, seed, records, cfg)
                    baselines.setdefault((_arch(obj), seed), (run, cfg))
        if suite["random_init"]:
            for (arch, seed), (run, cfg) in baselines.items():
                dest = out / "baselines" / (ds or "default") / f"{arch}_random_init_s{seed}"
                tag = f"{ds + ' ' if ds else ''}random-init {arch} seed {seed}"
                stages += _evaluations(suite, out, run, dest, tag, seed, records, cfg, random_init=True)
    return stages


def _available(source: str) -> bool:
    if source == "fashion_mnist":
        from pretrain.data.idx import FASHION_MNIST_DEFAULT

        return Path(FASHION_MNIST_DEFAULT).is_dir()
    if source == "animal_mnist":
        import importlib.util

        return importlib.util.find_spec("animal_mnist") is not None
    return True


def drop_unavailable(suite: dict) -> list[str]:
    """Optional Meta-Dataset sources whose data is not installed are left out (and said so)."""
    M = suite["meta_dataset"]
    gone = [s for s in M["optional"] if not _available(s)]
    M["convert"] = [s for s in M["convert"] if s not in gone]
    M["sources"] = [s for s in M["sources"] if s not in gone]
    return gone


def run_stage(stage: Stage) -> float:
    stage.log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(stage.log, "w") as log:
        log.write("$ " + " ".join(stage.cmd) + "\n")
        log.flush()
        proc = subprocess.run(stage.cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **stage.env})
    if proc.returncode != 0 or not stage.done.exists():
        tail = stage.log.read_text().strip().splitlines()[-5:]
        why = next((line for line in reversed(tail) if "error" in line.lower()), tail[-1] if tail else "")
        raise SuiteError(f"stage '{stage.name}' failed (exit {proc.returncode}): {why.strip()} -- full log: "
                         f"{stage.log}; completed stages are kept, run ring-suite again to resume.")
    return time.perf_counter() - t0


def run_suite(suite: dict, out: Path, progress: bool = True, select=None) -> str:
    """Runs the stages not yet complete, then writes the tables; ``select`` filters the planned stages."""
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
        for stage in todo:
            bar.set_postfix_str(stage.name)
            secs = run_stage(stage)
            tqdm.write(f"[ring-suite] done: {stage.name} ({secs:.0f} s)")
            bar.update(1)
    from .results import make_tables, plot_deltas, render
    from pretrain.io import atomic_write_text

    tables = make_tables([out / "pretrain", out / "baselines"] if (out / "baselines").exists()
                         else [out / "pretrain"])
    text = render(tables, "md")
    atomic_write_text(out / "results" / "tables.md", text)
    plotted = plot_deltas(tables, out / "results" / "deltas.png")
    print(text)
    print(f"[ring-suite] finished in {time.perf_counter() - t0:.0f} s; tables: {out / 'results' / 'tables.md'}"
          + (f", plot: {out / 'results' / 'deltas.png'}" if plotted else ""))
    return text


def submit_slurm(suite_path: str, out: Path, spec: str) -> int:
    """Submit this suite as one Slurm job with submitit (pip install 'ringnce[slurm]')."""
    try:
        import submitit
    except ImportError:
        raise SuiteError("--slurm needs submitit: pip install 'ringnce[slurm]'.") from None
    params = dict(kv.split("=", 1) for kv in spec.split(",") if kv)
    params = {k: int(v) if v.isdigit() else v for k, v in params.items()}
    ex = submitit.AutoExecutor(folder=str(out / "slurm"))
    ex.update_parameters(name="ring-suite", **{f"slurm_{k}" if k in ("partition", "account", "qos") else k: v
                                              for k, v in params.items()})
    job = ex.submit(main, [suite_path, "-o", str(out), "--no-progress"])
    print(f"[ring-suite] submitted Slurm job {job.job_id}; logs in {out / 'slurm'}")
    return 0


@cli_main("ring-suite")
def main(argv: list[str] | None = None) -> int:
    p = command_parser("ring-suite", __doc__, output="output directory (default: runs/<suite name>)")
    p.add_argument("suite", nargs="?", default=None, help="suite YAML or a shipped name (default: the embedded one)")
    p.add_argument("--dry-run", action="store_true", help="list the stages and whether each is complete")
    p.add_argument("--smoke", action="store_true", help="every distinct stage once, at toy size on tiny files in "
                                                        "each dataset's real format, through the same launchers")
    p.add_argument("--slurm", default=None, help="submit to Slurm with submitit: partition=..,gpus_per_node=..")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    suite, path = load_suite(args.suite)
    out = Path(args.output or f"runs/{Path(path).stem}{'_smoke' if args.smoke else ''}")
    if args.slurm:
        return submit_slurm(path, out, args.slurm)
    select = None
    if args.smoke:
        from .smoke import distinct, make_smoke

        suite, select = make_smoke(suite, out), distinct
    if args.dry_run:
        drop_unavailable(suite)
        stages = plan(suite, out)
        for s in select(stages) if select else stages:
            print(f"[{'x' if s.done.exists() else ' '}] {s.name}: {' '.join(s.cmd[1:])}")
        return 0
    run_suite(suite, out, progress=not args.no_progress, select=select)
    return 0


if __name__ == "__main__":
    sys.exit(main())
