"""Run under torchrun: trains a few steps with DDP (gloo) and saves this rank's weights and queue."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pretrain import distributed as D  # noqa: E402
from pretrain.config import load_config  # noqa: E402
from pretrain.engine import Trainer  # noqa: E402
from tests.conftest import TINY, opts_with  # noqa: E402


def main(out_dir: str, estimator: str) -> None:
    cfg = load_config(None, opts_with(TINY, **{"SOLVER.MAX_ITERS": 5, "SOLVER.BATCH_SIZE": 8,
                                             "KNN.ENABLED": False, "OBJECTIVE.ESTIMATOR": estimator}))
    trainer = Trainer(cfg, Path(out_dir) / "run")
    trainer.train()
    obj = trainer.objective
    torch.save({"params": {k: v for k, v in obj.named_parameters()},
                "queue": obj.queue.keys.clone(), "ptr": obj.queue.ptr.clone(), "iter": trainer.iter,
                "world": D.get_world_size(), "local_batch": trainer.batch_sampler.local_batch},
               Path(out_dir) / f"rank{D.get_rank()}.pt")
    D.cleanup()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
