"""ring-suite --launcher slurm against a real Slurm (tests/slurm_cluster.py starts one; skipped without root)."""
import json
import subprocess
import sys
import time
from argparse import Namespace

import pytest

from transfer import slurm
from transfer.tasks.base import Stage, SuiteError


def _opts(**kw):
    args = dict(partition="", account="", qos="", time="10", nodes=1, gpus_per_node=0, cpus_per_task=1, mem="",
                constraint="", sbatch=[])
    args.update(kw)
    return Namespace(**args)


def _wait(stages, out, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        rows = slurm.status(stages, out)
        if all(state in ("done", "failed", "not submitted") for _, state, _ in rows):
            return rows
        time.sleep(1)
    raise AssertionError(f"jobs still running after {timeout} s: {slurm.status(stages, out)}")


def _stage(tmp_path, name, after=(), fail=False):
    code = ("import sys, time; time.sleep(1); sys.exit(3)" if fail else
            f"import time, pathlib; time.sleep(1); pathlib.Path({str(tmp_path / name)!r}).write_text(str(time.time()))")
    return Stage(name, [sys.executable, "-c", code], tmp_path / name, tmp_path / "logs" / f"{name}.log",
                 after=tuple(tmp_path / a for a in after))


def test_every_slurm_flag_is_checked_before_anything_is_submitted(tmp_path):
    for kw, match in [({"time": "soon"}, "--time 'soon'"), ({"nodes": 0}, "--nodes must be >= 1"),
                      ({"mem": "lots"}, "--mem 'lots'"), ({"sbatch": ["--exclude=n1"]}, "KEY=VALUE without dashes")]:
        with pytest.raises(SuiteError, match=match):
            slurm.slurm_options(_opts(**kw))
    assert slurm.minutes("1-02:03:00") == 1563 and slurm.minutes("90") == 90 and slurm.minutes("00:00:30") == 1


def test_a_job_graph_runs_with_afterok_edges_and_a_failed_branch_stops_only_itself(tmp_path, slurm_cluster):
    """a -> b, and c (fails) -> d: b runs after a; c fails, d is cancelled, a and b complete; --status names
    each; submitting again skips what is done and resubmits the failed branch."""
    out = tmp_path / "out"
    stages = [_stage(tmp_path, "a"), _stage(tmp_path, "c", fail=True), _stage(tmp_path, "b", after=["a"]),
              _stage(tmp_path, "d", after=["c"])]
    opts = slurm.slurm_options(_opts(partition="debug"))
    jobs = slurm.submit(stages, out, opts)
    assert set(jobs) == {"a", "b", "c", "d"}
    deps = {n: subprocess.run(["scontrol", "show", "job", j], capture_output=True, text=True).stdout
            for n, j in jobs.items()}
    assert f"Dependency=afterok:{jobs['a']}" in deps["b"] and f"afterok:{jobs['c']}" in deps["d"]
    rows = {name: (state, detail) for name, state, detail in _wait(stages, out)}
    assert rows["a"][0] == rows["b"][0] == "done" and rows["c"][0] == rows["d"][0] == "failed"
    assert str(stages[1].log) in rows["c"][1]
    assert float((tmp_path / "b").read_text()) > float((tmp_path / "a").read_text())  # b started after a ended
    assert json.loads(slurm.state_file(out).read_text()) == jobs
    again = slurm.submit(stages, out, opts)  # only the failed branch goes again
    assert set(again) == {"c", "d"} and again["c"] != jobs["c"]


def _tiny_suite_file(tmp_path, nproc=1, iters=4):
    import yaml

    from tests.conftest import TINY, opts_with

    overrides = opts_with(TINY, **{"SOLVER.MAX_ITERS": iters, "KNN.ENABLED": False, "CHECKPOINT.PERIOD_ITERS": 2})
    suite = {"name": "tiny", "device": "cpu",
             "pretrain": {"config": "cpu_small", "objectives": ["moco"], "estimators": ["nce", "ring"], "seeds": [0],
                          "overrides": overrides, "nproc_per_node": nproc},
             "random_init": True, "lincls": {"overrides": ["LINCLS.EPOCHS", 1]}, "detection": {"enabled": False},
             "meta_dataset": {"convert": ["synthetic"], "max_per_class": 12, "sources": ["synthetic"], "episodes": 5,
                              "image_size": 16}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def _summaries(out):
    return {str(p.relative_to(out)): json.loads(p.read_text())["metrics"]
            for d in ("pretrain", "baselines") for p in (out / d).rglob("summary.json")}


@pytest.mark.slow
def test_the_suite_as_slurm_jobs_equals_the_local_launcher(tmp_path, slurm_cluster, capsys, monkeypatch):
    from transfer.suite import load_suite, main as suite_main, plan

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    path = _tiny_suite_file(tmp_path)
    local, remote = tmp_path / "local", tmp_path / "slurm"
    assert suite_main([str(path), "-o", str(local), "--no-progress"]) == 0
    assert suite_main([str(path), "-o", str(remote), "--launcher", "slurm", "--partition", "debug"]) == 0
    submitted = capsys.readouterr().out
    stages = plan(load_suite(path)[0], remote)
    assert submitted.count("submitted ") == len(stages) + 1  # every stage a job, and the tables
    _wait(stages, remote, timeout=600)
    deadline = time.time() + 120
    while not (remote / "results" / "tables.md").exists() and time.time() < deadline:
        time.sleep(1)
    assert suite_main([str(path), "-o", str(remote), "--status"]) == 0
    status = capsys.readouterr().out
    assert status.count(" done ") == len(stages) and f"{len(stages)} stages: {len(stages)} done" in status
    a, b = _summaries(local), _summaries(remote)
    assert a.keys() == b.keys() and len(a) == 8
    for k in a:
        if k.startswith("pretrain") and k.count("/") == 3:  # the pretraining runs: bit for bit
            assert a[k]["loss"] == b[k]["loss"], k
        for m in ("top1", "synthetic/accuracy"):
            if m in a[k]:
                assert abs(a[k][m] - b[k][m]) < 1.0, (k, m)
    assert "| moco-ring" in (remote / "results" / "tables.md").read_text()


@pytest.mark.slow
def test_two_srun_tasks_train_the_weights_of_two_local_processes(tmp_path, slurm_cluster, monkeypatch):
    """nproc_per_node 2: locally torchrun's two processes, on Slurm two srun tasks (gloo, CPU) whose
    torch.distributed comes from the job's environment: the same weights."""
    from pretrain.engine.checkpoint import load_checkpoint
    from transfer.suite import load_suite, plan, run_stage

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    path = _tiny_suite_file(tmp_path, nproc=2)
    suite = load_suite(path)[0]
    local = plan(suite, tmp_path / "local")[1]
    remote = plan(suite, tmp_path / "slurm")[1]
    assert local.kind == remote.kind == "pretrain" and remote.tasks == 2
    run_stage(local)
    slurm.submit([remote], tmp_path / "slurm", slurm.slurm_options(_opts(cpus_per_task=1)))
    assert _wait([remote], tmp_path / "slurm", timeout=300)[0][1] == "done", remote.log.read_text()[-2000:]
    a, b = load_checkpoint(local.done.parent)["model"], load_checkpoint(remote.done.parent)["model"]
    assert a.keys() == b.keys() and all(torch_equal(a[k], b[k]) for k in a)


def torch_equal(x, y):
    import torch

    return torch.equal(x, y)


@pytest.mark.slow
def test_a_signalled_pretraining_job_is_requeued_and_finishes_with_the_uninterrupted_weights(tmp_path, slurm_cluster,
                                                                                           monkeypatch):
    from pretrain.engine.checkpoint import load_checkpoint
    from transfer.suite import load_suite, plan, run_stage

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    suite = load_suite(_tiny_suite_file(tmp_path, iters=40))[0]
    ref, stage = plan(suite, tmp_path / "ref")[1], plan(suite, tmp_path / "slurm")[1]
    run_stage(ref)
    jobs = slurm.submit([stage], tmp_path / "slurm", slurm.slurm_options(_opts()))
    ck = stage.done.parent / "checkpoint_last.pth"
    deadline = time.time() + 300
    while not ck.exists() and time.time() < deadline:
        time.sleep(0.2)
    subprocess.run(["scancel", "--signal=USR2", jobs[stage.name]], check=True)  # as preemption or the time limit
    rows = _wait([stage], tmp_path / "slurm", timeout=600)
    assert rows[0][1] == "done", stage.log.read_text()[-2000:]
    assert stage.log.read_text().count("$ ") == 2 and "resumed" in stage.log.read_text()  # ran twice, resumed
    a, b = load_checkpoint(ref.done.parent)["model"], load_checkpoint(stage.done.parent)["model"]
    assert all(torch_equal(a[k], b[k]) for k in a)


def test_each_task_of_a_multi_node_job_gets_its_rank_and_each_detectron2_node_its_machine_rank(tmp_path):
    """Pretraining across 2 nodes x 2 tasks: every srun task runs the bare pretraining command with torchrun's
    variables from the job; Detectron2 across 2 nodes: one task per node, its own launch told the machine rank
    and the first node's address.  (A one-node test cluster cannot start a 2-node job: the commands are checked.)"""
    from types import SimpleNamespace

    pre = Stage("pretrain x", ["python", "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "pretrain.cli"],
                tmp_path / "s.json", tmp_path / "p.log", kind="pretrain", tasks=2, task_cmd=["python", "-m", "pretrain.cli"])
    det = Stage("mask_rcnn x", ["python", "-m", "transfer.detection.train_net", "--num-gpus", "8"], tmp_path / "d.json",
                tmp_path / "d.log", kind="detection",
                node_args=("--num-machines", "{nodes}", "--machine-rank", "{node_rank}", "--dist-url",
                           "tcp://{master_addr}:{master_port}"))
    lin = Stage("lincls x", ["python", "-m", "pretrain.lincls"], tmp_path / "l.json", tmp_path / "l.log", kind="lincls")
    assert slurm.spans_nodes(pre, 2) and slurm.spans_nodes(det, 2) and not slurm.spans_nodes(lin, 2)
    assert not slurm.spans_nodes(det, 1)
    task3 = SimpleNamespace(global_rank=3, local_rank=1, num_tasks=4, num_nodes=2, node=1, job_id="1234",
                            hostnames=["gpu07", "gpu08"])
    cmd, env, rank = slurm.StageJob(pre, nodes=2).command(task3)
    assert cmd == ["python", "-m", "pretrain.cli"] and rank == 3
    assert env == {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "gpu07",
                   "MASTER_PORT": str(20000 + 1234)}
    node1 = SimpleNamespace(**{**vars(task3), "global_rank": 1, "local_rank": 0, "num_tasks": 2})
    cmd, env, rank = slurm.StageJob(det, nodes=2).command(node1)
    assert cmd == [*det.cmd, "--num-machines", "2", "--machine-rank", "1", "--dist-url", "tcp://gpu07:21234"]
    assert env == {} and rank == 1
    one = SimpleNamespace(**{**vars(task3), "global_rank": 0, "local_rank": 0, "num_tasks": 1, "num_nodes": 1, "node": 0})
    assert slurm.StageJob(det, nodes=1).command(one)[0] == det.cmd  # one node: Detectron2 as locally
    assert slurm.StageJob(lin).command(one) == (lin.cmd, {}, 0)


def test_tables_alone_needs_an_existing_output_directory(tmp_path, capsys):
    """ring-suite --tables (the graph's last job) reads a suite's output: without one it stops with one sentence."""
    from transfer.suite import main as suite_main

    assert suite_main(["--tables", "-o", str(tmp_path / "nothing")]) == 2
    assert "--tables reads a suite's output" in capsys.readouterr().err


def test_a_slurm_flag_without_the_slurm_launcher_stops_before_any_stage(tmp_path, capsys):
    """--partition gpu alone would run the whole suite on this machine: one sentence, exit 2, nothing run."""
    from transfer.suite import main as suite_main

    out = tmp_path / "out"
    assert suite_main(["-o", str(out), "--partition", "gpu", "--time", "120"]) == 2
    err = capsys.readouterr().err
    assert "--partition is a Slurm setting: add --launcher slurm" in err and "--time" in err
    assert not out.exists()
    assert slurm.slurm_flags_given(_opts(time="60", partition="", nodes=1)) == []
