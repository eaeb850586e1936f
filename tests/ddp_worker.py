"""Run under torchrun (2 processes, gloo): the multi-process checks of tests/test_ddp.py in one launch.

1. exactness: for every objective x estimator, one optimizer step under DDP on this rank's half of a fixed
   global batch (BatchNorm in eval mode: its statistics are per device by design); saves the parameters
   and the pools;
2. the engine: 1 iteration of MoCo-Ring and of IR-Ring with pools larger than one iteration overwrites,
   then a resume to 2 iterations; saves each rank's pools and parameters after each.
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pretrain import distributed as D  # noqa: E402
from pretrain.config import load_config  # noqa: E402
from pretrain.engine.trainer import Trainer  # noqa: E402
from tests.conftest import TINY, opts_with  # noqa: E402
from tests.ddp_exactness import COMBINATIONS, global_batch, one_step  # noqa: E402


def exactness(out: Path) -> None:
    rank, world = D.get_rank(), D.get_world_size()
    for name, est in COMBINATIONS:
        x1, x2, index = global_batch()
        n = len(x1) // world
        rows = slice(rank * n, (rank + 1) * n)
        params, pools = one_step(name, est, x1[rows], x2[rows], index[rows], ddp=True)
        torch.save({"params": params, "pools": pools}, out / f"rank{rank}_{name}_{est}.pt")


def engine(out: Path) -> None:
    for name in ("moco", "ir"):
        cfg = opts_with(TINY, **{"OBJECTIVE.NAME": name, "OBJECTIVE.ESTIMATOR": "ring", "SOLVER.BATCH_SIZE": 8,
                                 "MOCO.QUEUE_SIZE": 64, "BANK.NUM_NEGATIVES": 15, "KNN.ENABLED": False,
                                 "CHECKPOINT.PERIOD_ITERS": 1, "DATA.AUGMENT": "ir" if name == "ir" else "mocov2"})
        run = out / f"engine_{name}"
        for iters, resume in ((1, False), (2, True)):
            trainer = Trainer(load_config(None, opts_with(cfg, **{"SOLVER.MAX_ITERS": iters})), run, resume=resume)
            trainer.train()
            obj = trainer.objective
            torch.save({"pools": {k: v.clone() for k, v in obj.named_buffers() if "bank" in k or "queue" in k},
                        "params": {k: v.detach().clone() for k, v in obj.named_parameters()}, "iter": trainer.iter},
                       out / f"rank{D.get_rank()}_engine_{name}_{iters}.pt")


if __name__ == "__main__":
    torch.distributed.init_process_group("gloo")
    out = Path(sys.argv[1])
    exactness(out)
    engine(out)
    D.cleanup()
