"""``ring-suite --launcher slurm``: the suite as a job graph on Slurm, through submitit.

Every stage of the plan is one Slurm job; a stage that reads what others make (``Stage.needs`` and
``Stage.after``: an evaluation reads its pretraining run, Meta-Dataset its converted records, Detectron2
its exported weights) is submitted with ``afterok`` dependencies on their jobs, so independent stages
(seeds, estimators, tasks) run at once.  A last job writes the tables once every stage has ended
(``afterany``: a failed branch leaves the others' rows).

- Processes: a stage with ``tasks`` > 1 (pretraining with ``nproc_per_node``) runs ``task_cmd`` as that many
  srun tasks per node on ``--nodes`` nodes, torch.distributed initialised from the job's environment (RANK,
  WORLD_SIZE, LOCAL_RANK, MASTER_ADDR: the first node, MASTER_PORT: from the job id).  A stage that launches
  its own processes (Detectron2, ``Stage.node_args``) runs one task per node told its machine rank and the
  first node's address.  Every other stage is one task on one node.
- Time limits and preemption: each job is submitit-checkpointable; on the time limit or ``scancel
  --signal=USR2`` submitit requeues it and the stage's command continues from its last checkpoint
  (pretraining runs with --auto-resume, Detectron2 with --resume: both exact).
- State: ``<out>/slurm/jobs.json`` maps stage names to job ids.  Submitting again skips what is done (its
  marker exists) or still queued/running, and submits the rest; ``--status`` prints every stage's state.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from transfer.tasks.base import Stage, SuiteError, pending_makers

LIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED", "REQUEUE_HOLD",
        "REQUEUE_FED", "SIGNALING", "STAGE_OUT"}


@dataclass
class SlurmOptions:
    """The Slurm settings every job of the suite gets (``add_slurm_arguments`` documents each)."""
    partition: str = ""
    account: str = ""
    qos: str = ""
    time: str = "60"
    nodes: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = 1
    mem: str = ""
    constraint: str = ""
    sbatch: list = field(default_factory=list)


def add_slurm_arguments(p) -> None:
    g = p.add_argument_group("Slurm (--launcher slurm)")
    g.add_argument("--partition", default="", help="partition to submit to (default: the cluster's default)")
    g.add_argument("--account", default="", help="account to charge")
    g.add_argument("--qos", default="", help="quality of service")
    g.add_argument("--time", default="60", help="time limit of every job: minutes, or [D-]HH:MM:SS (default 60); "
                                                 "a stage that reaches it is requeued and resumes")
    g.add_argument("--nodes", type=int, default=1, help="nodes of each pretraining job (the others use one)")
    g.add_argument("--gpus-per-node", type=int, default=0, help="GPUs per node of every job")
    g.add_argument("--cpus-per-task", type=int, default=1, help="CPU cores per task (data loading workers)")
    g.add_argument("--mem", default="", help="memory per node, e.g. 64G (default: the partition's)")
    g.add_argument("--constraint", default="", help="node features, e.g. a100")
    g.add_argument("--sbatch", action="append", default=[], metavar="KEY=VALUE",
                   help="any other sbatch option, e.g. --sbatch exclude=node7 (repeatable)")


def minutes(text: str) -> int:
    """A Slurm time limit (minutes, or [D-]HH:MM:SS) in whole minutes (at least 1)."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d\d):(\d\d)", text.strip())
    if m:
        d, h, mi, s = (int(x or 0) for x in m.groups())
        return max(1, d * 1440 + h * 60 + mi + (s > 0))
    if text.strip().isdigit() and int(text) > 0:
        return int(text)
    raise SuiteError(f"--time {text!r}: give minutes (e.g. 120) or [D-]HH:MM:SS (e.g. 1-12:00:00).")


def slurm_flags_given(args) -> list[str]:
    """The Slurm flags set to something other than their default (they mean nothing to --launcher local)."""
    default = SlurmOptions()
    return [f"--{k.replace('_', '-')}" for k in vars(default) if getattr(args, k) != getattr(default, k)]


def slurm_options(args) -> SlurmOptions:
    """The flags checked before anything is submitted (one sentence each)."""
    minutes(args.time)
    for flag, value, low in (("--nodes", args.nodes, 1), ("--gpus-per-node", args.gpus_per_node, 0),
                             ("--cpus-per-task", args.cpus_per_task, 1)):
        if value < low:
            raise SuiteError(f"{flag} must be >= {low}, got {value}.")
    if args.mem and not re.fullmatch(r"\d+[KMGT]?", args.mem):
        raise SuiteError(f"--mem {args.mem!r}: give a size such as 64G or 32000M.")
    for extra in args.sbatch:
        if "=" not in extra or extra.startswith("-"):
            raise SuiteError(f"--sbatch {extra!r}: give KEY=VALUE without dashes, e.g. --sbatch exclude=node7.")
    if shutil.which("sbatch") is None:
        raise SuiteError("--launcher slurm needs Slurm's sbatch on PATH (run ring-suite on a login node), or use "
                         "--launcher local.")
    if args.partition:
        known = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True).stdout.split()
        if known and args.partition not in known:
            raise SuiteError(f"--partition {args.partition!r} is not one of this cluster's: {', '.join(known)}.")
    return SlurmOptions(args.partition, args.account, args.qos, args.time, args.nodes, args.gpus_per_node,
                        args.cpus_per_task, args.mem, args.constraint, list(args.sbatch))


def spans_nodes(stage: Stage, nodes: int) -> bool:
    """Whether the stage runs on all ``nodes`` (pretraining as srun tasks, Detectron2 with its own launch);
    every other stage runs on one node."""
    return nodes > 1 and bool(stage.task_cmd or stage.node_args)


def port_of(job_id) -> int:
    """A rendezvous port that differs between concurrent jobs (from the job id) and is the same on every node."""
    return 20000 + int(str(job_id).split("_")[0]) % 20000


def node_command(stage: Stage, nodes: int, node_rank: int, master_addr: str, master_port: int) -> list:
    """The command one node runs for a stage that launches its own processes (``Stage.node_args``)."""
    fill = dict(nodes=nodes, node_rank=node_rank, master_addr=master_addr, master_port=master_port)
    return [*stage.cmd, *(str(a).format(**fill) for a in stage.node_args)]


def rank_env(job_env) -> dict[str, str]:
    """torch.distributed's variables for one srun task, from submitit's view of the Slurm job (what torchrun
    would set; pretrain/distributed.py reads them)."""
    return dict(RANK=str(job_env.global_rank), WORLD_SIZE=str(job_env.num_tasks), LOCAL_RANK=str(job_env.local_rank),
                LOCAL_WORLD_SIZE=str(job_env.num_tasks // job_env.num_nodes), MASTER_ADDR=job_env.hostnames[0],
                MASTER_PORT=str(port_of(job_env.job_id)))


class StageJob:
    """What one Slurm job runs: the stage's command (per srun task for a distributed pretraining, per node for a
    stage with its own launcher), its output appended to the stage's log; submitit requeues it on the time limit
    or preemption (``checkpoint``)."""

    def __init__(self, stage: Stage, nodes: int = 1):
        self.stage, self.nodes = stage, nodes

    def command(self, job_env) -> tuple[list, dict, int]:
        """(command, extra environment, rank) for this task of the job."""
        st = self.stage
        if st.task_cmd and (st.tasks > 1 or self.nodes > 1):
            return list(st.task_cmd), rank_env(job_env), job_env.global_rank
        if st.node_args and self.nodes > 1:
            return (node_command(st, self.nodes, job_env.node, job_env.hostnames[0], port_of(job_env.job_id)), {},
                    job_env.node)
        return list(st.cmd), {}, 0

    def __call__(self) -> str:
        import submitit

        cmd, extra, rank = self.command(submitit.JobEnvironment())
        env, log = {**os.environ, **self.stage.env, **extra}, Path(self.stage.log)
        log = log if rank == 0 else log.with_name(f"{log.stem}.rank{rank}{log.suffix}")
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as f:
            f.write("$ " + " ".join(map(str, cmd)) + "\n")
            f.flush()
            rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
        if rc != 0:
            raise RuntimeError(f"stage '{self.stage.name}' failed (exit {rc}); log: {log}")
        if rank == 0 and not Path(self.stage.done).exists():
            raise RuntimeError(f"stage '{self.stage.name}' exited 0 without writing {self.stage.done}; log: {log}")
        return str(self.stage.done)

    def checkpoint(self, *args, **kwargs):
        import submitit

        return submitit.helpers.DelayedSubmission(self)  # the same command again: it resumes itself


def job_states(ids) -> dict[str, str]:
    """Slurm's state of each of ``ids`` still known to the controller, by id.  All of this user's jobs are
    listed and filtered here: ``squeue -j`` with an id the controller has already forgotten fails as a whole,
    which would make every running job look ended (and a resubmission start it twice)."""
    ids = {i for i in ids if i}
    if not ids:
        return {}
    proc = subprocess.run(["squeue", "-h", "--me", "-o", "%i %T"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SuiteError(f"squeue failed ({proc.stderr.strip() or proc.returncode}): the jobs' states are unknown, "
                         "so nothing was submitted or reported; try again when the controller answers.")
    states = {}
    for line in proc.stdout.splitlines():
        jid, _, st = line.strip().partition(" ")
        if jid.split("_")[0] in ids:
            states[jid.split("_")[0]] = st
    return states


def state_file(out: Path) -> Path:
    return out / "slurm" / "jobs.json"


def load_jobs(out: Path) -> dict[str, str]:
    f = state_file(out)
    return json.loads(f.read_text()) if f.exists() else {}


def save_jobs(out: Path, jobs: dict[str, str]) -> None:
    from pretrain.io import atomic_write_json

    atomic_write_json(state_file(out), jobs)


def executor(out: Path, opts: SlurmOptions, stage: Stage, deps: list[str], kind: str = "afterok"):
    import submitit

    nodes = opts.nodes if spans_nodes(stage, opts.nodes) else 1
    per_node = stage.tasks if stage.task_cmd else 1
    ex = submitit.AutoExecutor(folder=str(out / "slurm" / "%j"), cluster="slurm")
    extra = dict(kv.split("=", 1) for kv in opts.sbatch)
    if deps:  # a failed maker cancels its dependents (a rerun submits the branch again), instead of pending forever
        extra["dependency"] = f"{kind}:" + ":".join(deps)
        extra["kill-on-invalid-dep"] = "yes"
    ex.update_parameters(
        name=f"ring {stage.name}"[:64], timeout_min=minutes(opts.time),
        nodes=nodes, tasks_per_node=per_node,
        cpus_per_task=opts.cpus_per_task, slurm_signal_delay_s=120,
        **({"gpus_per_node": opts.gpus_per_node} if opts.gpus_per_node else {}),
        **{f"slurm_{k}": v for k, v in (("partition", opts.partition), ("account", opts.account),
                                          ("qos", opts.qos), ("mem", opts.mem), ("constraint", opts.constraint)) if v},
        slurm_additional_parameters=extra)
    return ex, nodes


def submit(stages: list[Stage], out: Path, opts: SlurmOptions, tables: Stage | None = None) -> dict[str, str]:
    """Submits every stage neither complete nor queued/running (in plan order: makers first), with afterok
    dependencies; then ``tables`` after all of them (afterany).  Returns stage name -> job id."""
    jobs = load_jobs(out)
    live = job_states(jobs.values())
    makers = {str(st.done): st for st in stages}
    submitted: dict[str, str] = {}
    for st in stages:
        if st.done.exists():
            continue
        if st.name in jobs and live.get(jobs[st.name]) in LIVE:
            submitted[st.name] = jobs[st.name]
            continue
        deps = pending_makers(st, makers)
        blocked = [d.name for d in deps if d.name not in submitted]
        if blocked:  # a maker that failed earlier and is not queued: this branch waits for a resubmission
            print(f"[ring-suite] not submitted: {st.name} (waits for '{blocked[0]}', which did not complete)")
            continue
        ex, nodes = executor(out, opts, st, [submitted[d.name] for d in deps])
        job = ex.submit(StageJob(st, nodes))
        submitted[st.name] = jobs[st.name] = str(job.job_id)
        save_jobs(out, jobs)
        print(f"[ring-suite] submitted {st.name}: job {job.job_id}"
              + (f" after {', '.join(submitted[d.name] for d in deps)}" if deps else ""))
    if tables is not None and submitted:
        ex, _ = executor(out, opts, tables, sorted(set(submitted.values())), kind="afterany")
        job = ex.submit(StageJob(tables))
        jobs[tables.name] = str(job.job_id)
        save_jobs(out, jobs)
        print(f"[ring-suite] submitted {tables.name}: job {job.job_id} after every stage above ends")
    return submitted


def status(stages: list[Stage], out: Path) -> list[tuple[str, str, str]]:
    """(stage, state, detail) for every stage: done, queued/running (job id), failed (its log), not submitted."""
    jobs = load_jobs(out)
    live = job_states(jobs.values())
    rows = []
    for st in stages:
        jid = jobs.get(st.name)
        if st.done.exists():
            rows.append((st.name, "done", str(st.done)))
        elif jid and live.get(jid) in LIVE:
            rows.append((st.name, "queued" if live[jid] == "PENDING" else live[jid].lower(), f"job {jid}"))
        elif jid:
            rows.append((st.name, "failed", f"job {jid}, log {st.log}"))
        else:
            rows.append((st.name, "not submitted", ""))
    return rows

