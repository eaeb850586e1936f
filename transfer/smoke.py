"""ring-suite --smoke: every distinct stage of a suite once, at toy size, through the real launchers.

A GPU suite (``paper_cifar``, ``paper_imagenet``) is hundreds of GPU-hours; a stage that cannot start
should fail in minutes on a laptop, not at hour 30 on a cluster.  ``--smoke`` keeps the suite's stages,
configs and launchers and shrinks everything else:
- data: tiny files written in each dataset's real format (CIFAR pickles, STL-10 binaries, ImageFolder
  JPEGs, COCO 2017 json with masks and keypoints, Pascal VOC xml, Meta-Dataset records), under
  ``OUT/smoke_data``;
- stages: the first seed, and one stage per distinct (kind, config): every pretraining config and its
  linear evaluation, each Detectron2 task once (on the first run's weights), Meta-Dataset once;
- launchers: pretraining under ``torchrun`` with 2 processes (gloo) where the suite uses several, Detectron2
  with 2 processes (``ring-train-net --num-gpus 2``, gloo on CPU) where it uses several;
- sizes: 2 iterations of batch 8 at 96 px, 1 linear epoch, 2 detection iterations at 64-96 px, 5 episodes.
"""
from __future__ import annotations

import copy
from pathlib import Path

from pretrain.common import UserError
from pretrain.config import load_config
from transfer import formats

PRETRAIN = ["SOLVER.EPOCHS", 1, "SOLVER.MAX_ITERS", 2, "SOLVER.BATCH_SIZE", 8, "DATA.IMAGE_SIZE", 96,
            "DATA.NUM_WORKERS", 0, "MOCO.QUEUE_SIZE", 16, "BANK.NUM_NEGATIVES", 15, "KNN.K", 5, "KNN.MAX_TRAIN", 16,
            "KNN.MAX_TEST", 8, "LOG.TENSORBOARD", False, "CHECKPOINT.PERIOD_ITERS", 1]
LINCLS = ["LINCLS.EPOCHS", 1, "LINCLS.BATCH_SIZE", 8, "LINCLS.MAX_TRAIN", 16, "LINCLS.MAX_TEST", 8]
DETECTION = ["SOLVER.MAX_ITER", 2, "SOLVER.IMS_PER_BATCH", 2, "SOLVER.STEPS", "(1,)", "SOLVER.WARMUP_ITERS", 1,
             "SOLVER.CHECKPOINT_PERIOD", 1000, "TEST.EVAL_PERIOD", 0, "TEST.PRECISE_BN.NUM_ITER", 2,
             "DATALOADER.NUM_WORKERS", 0, "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", 96,
             "INPUT.MIN_SIZE_TEST", 64, "INPUT.MAX_SIZE_TEST", 96, "MODEL.RPN.PRE_NMS_TOPK_TRAIN", 200,
             "MODEL.RPN.POST_NMS_TOPK_TRAIN", 50, "MODEL.RPN.PRE_NMS_TOPK_TEST", 100, "MODEL.RPN.POST_NMS_TOPK_TEST", 50,
             "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 32]


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


def _detectron2_data(root: Path, names: set[str]) -> None:
    """Detectron2's builtin layouts under $DETECTRON2_DATASETS for the datasets the tasks name."""
    from transfer.detectron2_compat import ensure

    ensure()
    from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

    coco = [{"id": c["id"], "name": c["name"], "supercategory": "thing"} for c in COCO_CATEGORIES if c["isthing"]]
    person = [c for c in coco if c["name"] == "person"]
    known = set()
    for split in ("train", "val"):
        if f"coco_2017_{split}" in names:
            formats.write_coco(root, split, coco, n_images=4)
            known.add(f"coco_2017_{split}")
        if f"keypoints_coco_2017_{split}" in names:
            formats.write_coco(root, split, person, keypoints=True, n_images=4, seed=1)
            known.add(f"keypoints_coco_2017_{split}")
    voc = {n for n in names if n.startswith("voc_")}
    for year in ("2007", "2012"):
        splits = {n.split("_")[-1]: 4 for n in voc if n.startswith(f"voc_{year}_")}
        if splits:
            formats.write_voc(root, year, splits)
            known |= {f"voc_{year}_{s}" for s in splits}
    unknown = sorted(n for n in names - known if not n.startswith("scenes_"))
    if unknown:
        raise UserError(f"--smoke has no tiny-data writer for the Detectron2 dataset '{unknown[0]}'; it writes "
                        "coco_2017_*, keypoints_coco_2017_*, voc_{2007,2012}_* and uses the synthetic scenes_*.")


def _md_records(root: Path, sources: list[str]) -> None:
    from meta_dataset.convert import CONVERTER_REGISTRY, write_source

    images, names = CONVERTER_REGISTRY.get("synthetic")(12, None)
    for src in sources:
        write_source(root, src, images, names)


def _detection_datasets(config: str) -> set[str]:
    from transfer.detection.train_net import load_cfg

    cfg = load_cfg(config)
    return set(cfg.DATASETS.TRAIN) | set(cfg.DATASETS.TEST)


# -- the suite at toy size -----------------------------------------------------------------------------
def make_smoke(suite: dict, out: Path) -> dict:
    """The suite rewritten for a smoke run (tiny data written under OUT/smoke_data)."""
    s = copy.deepcopy(suite)
    data = out / "smoke_data"
    P, L, D, M = s["pretrain"], s["lincls"], s["detection"], s["meta_dataset"]
    P["seeds"] = P["seeds"][:1]
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
    L["overrides"] = [*L["overrides"], *LINCLS]
    if D["enabled"] and D["tasks"]:
        D["num_gpus"] = 2 if D["num_gpus"] > 1 else 1
        names = set().union(*(_detection_datasets(t["config"]) for t in D["tasks"]))
        d2 = data / "detectron2"
        if not d2.exists():
            _detectron2_data(d2, names)
        D["env"] = {"DETECTRON2_DATASETS": str(d2)}
        import torch

        device = [] if torch.cuda.is_available() else ["MODEL.DEVICE", "cpu"]  # the paper configs say cuda
        for t in D["tasks"]:
            t["overrides"] = [*t["overrides"], *DETECTION, *device]
    if M["enabled"] and M["sources"]:
        records = data / "md_records"
        if not records.exists():
            _md_records(records, M["sources"])
        M.update(records=str(records), convert=[], optional=[], episodes=5, image_size=32)
    return s


def distinct(stages: list) -> list:
    """One stage per (kind, key); exports only where a kept Detection stage needs their weights."""
    seen, kept = set(), []
    for st in stages:
        if (st.kind, st.key) in seen:
            continue
        seen.add((st.kind, st.key))
        kept.append(st)
    needed = {str(Path(st.cmd[st.cmd.index("MODEL.WEIGHTS") + 1]).parent) for st in kept if st.kind == "detection"}
    return [st for st in kept if st.kind != "export" or st.key in needed]
