import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "2")
pytest_plugins = ["tests.slurm_cluster"]  # the slurm_cluster fixture (a real one-node Slurm)

# A configuration small enough for unit tests: 16-px synthetic images, batch 8, queue 32.
TINY = ["DATA.NAME", "synthetic", "DATA.SYNTHETIC_SIZE", "64", "DATA.IMAGE_SIZE", "16", "DATA.NUM_WORKERS", "0",
        "MODEL.BACKBONE", "resnet18", "MODEL.SMALL_STEM", "False", "MODEL.OUT_DIM", "16",
        "SOLVER.BATCH_SIZE", "8", "SOLVER.EPOCHS", "2", "SOLVER.LR", "0.05", "SOLVER.SCHEDULE", "cosine",
        "MOCO.QUEUE_SIZE", "32", "MOCO.MOMENTUM", "0.9", "CHECKPOINT.PERIOD_ITERS", "3", "LOG.PERIOD", "2",
        "LOG.PROGRESS", "False", "LOG.TENSORBOARD", "False", "KNN.K", "5", "LINCLS.EPOCHS", "3",
        "LINCLS.BATCH_SIZE", "16", "DEVICE", "cpu"]


@pytest.fixture
def tiny_opts():
    return list(TINY)


def opts_with(base, **kv):
    """Override entries of a KEY VALUE list: opts_with(TINY, **{"SOLVER.EPOCHS": 3})."""
    out = list(base)
    for k, v in kv.items():
        if k in out[0::2]:
            out[out.index(k) + 1] = str(v)
        else:
            out += [k, str(v)]
    return out
