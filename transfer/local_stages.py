"""The local launcher: a suite's stages run on this machine, one after another or ``--jobs N`` at once.

With N > 1 a stage starts as soon as the stages that make what it reads are complete (``Stage.needs`` and
``Stage.after``: the same edges the Slurm launcher turns into job dependencies), in plan order among those
ready, N at most.  Each stage then gets ``cores // N`` threads (OMP_NUM_THREADS and MKL_NUM_THREADS, unless
set already) so that N stages share the cores instead of oversubscribing them: on a 2-core CPU, where one
small model step does not keep two threads busy, two one-thread stages side by side do more work than one
two-thread stage (docs/benchmarks.md).  The thread count is part of a CPU run's arithmetic: a suite re-run at
the same N gives the same numbers.  The first stage that fails stops new starts; the stages running finish
(what they complete is kept, a rerun resumes) and the failure is raised.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Callable, TextIO

from transfer.tasks.base import Stage, SuiteError, pending_makers

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
POLL_S = 0.5


def open_log(stage: Stage) -> TextIO:
    """The stage's log, created with the command on its first line."""
    stage.log.parent.mkdir(parents=True, exist_ok=True)
    log = open(stage.log, "w")
    log.write("$ " + " ".join(stage.cmd) + "\n")
    log.flush()
    return log


def check_ended(stage: Stage, returncode: int) -> None:
    """Raises the stage's failure (one sentence naming its log), or when it exited 0 without its marker."""
    if returncode == 0 and not stage.done.exists():  # a stage's marker is what makes it count as done
        raise SuiteError(f"stage '{stage.name}' exited 0 without writing {stage.done}, the file that marks it "
                         f"complete (a bug in the stage's command) -- full log: {stage.log}.")
    if returncode != 0:
        tail = stage.log.read_text().strip().splitlines()[-5:]
        why = next((line for line in reversed(tail) if "error" in line.lower()), tail[-1] if tail else "")
        raise SuiteError(f"stage '{stage.name}' failed (exit {returncode}): {why.strip()} -- full log: "
                         f"{stage.log}; completed stages are kept, run ring-suite again to resume.")


def run_stage(stage: Stage) -> float:
    """Runs one stage to its end; returns its seconds."""
    t0 = time.perf_counter()
    with open_log(stage) as log:
        proc = subprocess.run(stage.cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **stage.env})
    check_ended(stage, proc.returncode)
    return time.perf_counter() - t0


def thread_env(jobs: int) -> dict[str, str]:
    """The thread settings each of ``jobs`` concurrent stages gets (none for one stage at a time)."""
    if jobs <= 1:
        return {}
    from pretrain.data.workers import available_cores

    share = str(max(1, available_cores() // jobs))
    return {k: os.environ.get(k, share) for k in THREAD_VARIABLES}


def run_concurrently(todo: list[Stage], planned: list[Stage], jobs: int,
                     on_running: Callable[[list[Stage]], None], on_done: Callable[[Stage, float], None]) -> None:
    """Runs ``todo`` (the stages of ``planned`` not complete), ``jobs`` at most at once, each after its makers;
    ``on_running`` is given the running stages whenever they change, ``on_done`` each stage that completes."""
    makers = {str(s.done): s for s in planned}
    threads = thread_env(jobs)
    waiting = list(todo)
    running: dict[subprocess.Popen, tuple[Stage, float]] = {}
    failure: SuiteError | None = None
    try:
        while waiting or running:
            ready = [s for s in waiting if not pending_makers(s, makers)] if failure is None else []
            for stage in ready[:jobs - len(running)]:
                with open_log(stage) as log:  # the child keeps its own copy of the descriptor
                    # its own process group: Ctrl-C reaches the suite, which passes it on once (below)
                    proc = subprocess.Popen(stage.cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                            env={**os.environ, **threads, **stage.env})
                running[proc] = (stage, time.perf_counter())
                waiting.remove(stage)
                on_running([s for s, _ in running.values()])
            if not running:
                if failure is not None:
                    break
                raise SuiteError(f"stage '{waiting[0].name}' waits for "
                                 f"'{pending_makers(waiting[0], makers)[0].name}', which is not planned to run "
                                 f"before it (a bug in the suite's plan).")
            time.sleep(POLL_S)
            for proc in [p for p in running if p.poll() is not None]:
                stage, t0 = running.pop(proc)
                try:
                    check_ended(stage, proc.returncode)
                    on_done(stage, time.perf_counter() - t0)
                except SuiteError as e:
                    failure = failure or e
                on_running([s for s, _ in running.values()])
    except KeyboardInterrupt:
        interrupt(list(running))
        raise
    if failure is not None:
        raise failure


def interrupt(procs: list[subprocess.Popen]) -> None:
    """Passes a Ctrl-C on to each running stage (it stops at its next safe point: pretraining between steps,
    its checkpoint kept) and waits for them; a further Ctrl-C while waiting is passed on too."""
    while True:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        try:
            for proc in procs:
                proc.wait()
            return
        except KeyboardInterrupt:
            continue
