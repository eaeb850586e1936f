import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT


@pytest.mark.parametrize("estimator", ["nce", "ring"])
def test_two_process_ddp_keeps_ranks_identical(tmp_path, estimator):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "tests" / "ddp_worker.py"), str(tmp_path), estimator]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2 and r0["local_batch"] == 4 and r0["iter"] == 5
    assert torch.equal(r0["queue"], r1["queue"]) and int(r0["ptr"]) == (5 * 8) % 32
    for k in r0["params"]:
        assert torch.equal(r0["params"][k], r1["params"][k]), k
    # the queue holds real keys now (unit norm), not its random initialisation
    assert torch.allclose(r0["queue"][:8].norm(dim=1), torch.ones(8), atol=1e-4)
    assert (tmp_path / "run" / "summary.json").exists() and (tmp_path / "run" / "checkpoint_last.pth").exists()
