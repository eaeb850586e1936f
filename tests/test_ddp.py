"""Multi-process training is exact: 2 processes (gloo, CPU) on a global batch give the parameters of one
process on the same batch, for every objective x estimator; pools are identical on all ranks from the
first step and after a DDP resume.  One torchrun launch runs every 2-process check (tests/ddp_worker.py)."""
import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT
from tests.ddp_exactness import COMBINATIONS, global_batch, one_step


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "tests" / "ddp_worker.py"), str(out)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def test_one_ddp_step_equals_one_process_on_the_global_batch(two_process_run):
    worst = {}
    for name, est in COMBINATIONS:
        ref_params, ref_pools = one_step(name, est, *global_batch(), ddp=False)
        ranks = [torch.load(two_process_run / f"rank{r}_{name}_{est}.pt", weights_only=True) for r in (0, 1)]
        for r in ranks:
            for k, ref in ref_params.items():
                err = relative_error(r["params"][k], ref)
                worst[(name, est)] = max(worst.get((name, est), 0.0), err)
                assert err < 1e-5, (name, est, k, err)
            for k, ref in ref_pools.items():  # banks and queues: the global batch's update, on every rank
                assert torch.allclose(r["pools"][k], ref, atol=1e-5), (name, est, k)
        for k in ranks[0]["pools"]:
            assert torch.equal(ranks[0]["pools"][k], ranks[1]["pools"][k]), (name, est, k)
    assert len(worst) == len(COMBINATIONS) == 16


@pytest.mark.parametrize("name", ["moco", "ir"])
def test_pools_identical_on_all_ranks_from_the_first_step_and_after_resume(two_process_run, name):
    for iters in (1, 2):  # 1: a fresh run (8 of 64 entries overwritten); 2: after a DDP resume
        r0, r1 = (torch.load(two_process_run / f"rank{r}_engine_{name}_{iters}.pt", weights_only=True) for r in (0, 1))
        assert r0["iter"] == r1["iter"] == iters
        assert r0["pools"] and all(torch.equal(r0["pools"][k], r1["pools"][k]) for k in r0["pools"])
        assert all(torch.equal(r0["params"][k], r1["params"][k]) for k in r0["params"])
        # the pool is larger than what the iterations wrote, so its untouched initial entries are compared too
        pool = r0["pools"]["queue.keys" if name == "moco" else "memory.bank"]
        assert len(pool) == 64 > 8 * iters
