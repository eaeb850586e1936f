"""ring-suite --smoke: every distinct stage of a suite once, at toy size, through the real launchers.

A GPU suite (``paper_cifar``, ``paper_imagenet``) is hundreds of GPU-hours; a stage that cannot start
should fail in minutes on a laptop, not at hour 30 on a cluster.  ``--smoke`` keeps the suite's stages,
configs and launchers and shrinks everything else:
- data: tiny files written in each dataset's real format (CIFAR pickles, STL-10 binaries, ImageFolder
  JPEGs, COCO 2017 json with masks and keypoints, Pascal VOC xml, Meta-Dataset records), under
  ``OUT/smoke_data``;
- stages: the first seed, and one stage per distinct (kind, config): every pretraining config and its
  linear evaluation, each Detectron2 task once (on the first run's weights), Meta-Dataset once; and a
  pretraining stage for every registered estimator the suite does not name (the registry, not a list);
- launchers: pretraining under ``torchrun`` with 2 processes (gloo) where the suite uses several, Detectron2
  with 2 processes (``ring-train-net --num-gpus 2``, gloo on CPU) where it uses several;
- sizes: 2 iterations of batch 8 at 96 px, 1 linear epoch, 2 detection iterations at 64-96 px, 5 episodes.
"""
from __future__ import annotations

import copy
from pathlib import Path

from pretrain.common import UserError
from pretrain.config import load_config
from pretrain.contrastive.estimators import estimator_names
from transfer import formats
from transfer.tasks import enabled_tasks

PRETRAIN = ["SOLVER.EPOCHS", 1, "SOLVER.MAX_ITERS", 2, "SOLVER.BATCH_SIZE", 8, "DATA.IMAGE_SIZE", 96,
            "DATA.NUM_WORKERS", 0, "MOCO.QUEUE_SIZE", 16, "BANK.NUM_NEGATIVES", 15, "KNN.K", 5, "KNN.MAX_TRAIN", 16,
            "KNN.MAX_TEST", 8, "LOG.TENSORBOARD", False, "CHECKPOINT.PERIOD_ITERS", 1]


# -- tiny data in each real format, by DATA.NAME ---------------------------------------------------
def _cifar10(root: Path) -> None:
    formats.write_cifar10(root, n_per_batch=4)  # 5 batches: 20 training images


def _cifar100(root: Path) -> None:
    formats.write_cifar100(root, n=16)


def _stl10(root: Path) -> None:
    formats.write_stl10(root, n=16, n_unlabeled=4)


def _imagefolder(root: Path) -> None:
    formats.write_image_folder(root, per_class=8, size=48, splits=("train", "val"), jpeg=True)


DATA_WRITERS = {"cifar10": _cifar10, "cifar100": _cifar100, "stl10": _stl10, "imagefolder": _imagefolder,
                "synthetic": None}


# -- the suite at toy size -----------------------------------------------------------------------------
def make_smoke(suite: dict, out: Path) -> dict:
    """The suite rewritten for a smoke run (tiny data written under OUT/smoke_data): pretraining here, each
    transfer task's section by the task (``TransferTask.smoke``).  Every registered estimator the suite does
    not run gets one pretraining stage too (first dataset and objective): whatever a user can name starts."""
    s = copy.deepcopy(suite)
    data = out / "smoke_data"
    P = s["pretrain"]
    P["seeds"] = P["seeds"][:1]
    P["extra_estimators"] = [e for e in estimator_names() if e not in P["estimators"]]
    P["nproc_per_node"] = 2 if P["nproc_per_node"] > 1 else 1
    P["overrides"] = [*P["overrides"], *PRETRAIN]
    P["data_roots"] = {}
    for ds in P["datasets"]:
        cfg = load_config(P["config"].format(dataset=ds, objective=P["objectives"][0], estimator=P["estimators"][0]))
        kind = cfg.DATA.NAME
        if kind not in DATA_WRITERS:
            raise UserError(f"--smoke has no tiny-data writer for the dataset kind '{kind}' (DATA.NAME of suite dataset "
                            f"'{ds}'); it writes {', '.join(k for k in DATA_WRITERS if DATA_WRITERS[k])} and uses "
                            "the built-in synthetic data.")
        if DATA_WRITERS[kind]:
            root = data / (ds or "default")
            if not root.exists():
                DATA_WRITERS[kind](root)
            P["data_roots"][ds] = str(root)
    for task in enabled_tasks(s):
        task.smoke(s[task.name], data)
    return s


def distinct(stages: list) -> list:
    """One stage per (kind, key); a stage that only makes what others need (an export) only where a kept stage
    needs it."""
    seen, kept = set(), []
    for st in stages:
        if (st.kind, st.key) in seen:
            continue
        seen.add((st.kind, st.key))
        kept.append(st)
    needed = {str(n) for st in kept for n in st.needs}
    made_for_others = {str(n) for st in stages for n in st.needs}
    return [st for st in kept if str(st.done) not in made_for_others or str(st.done) in needed]
