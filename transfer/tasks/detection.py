"""Detectron2 transfer: ``ring-export`` of the backbone, then ``ring-train-net`` for each task of the section
(Mask R-CNN, Keypoint R-CNN, VOC, ... by config), COCO-style AP columns."""
from __future__ import annotations

from pathlib import Path

from pretrain.common import UserError, check_keys
from transfer import formats
from transfer.detection.builtin_sets import builtin_set, suite_folders
from transfer.tasks.base import (TASK_REGISTRY, EvalContext, Row, Stage, SuiteError, TransferTask, check_estimators,
                                 py)

METRICS = [("bbox", "AP"), ("bbox", "AP50"), ("bbox", "AP75"), ("segm", "AP"), ("keypoints", "AP")]
LABELS = {"bbox": "box", "segm": "mask", "keypoints": "kp"}
TASK_SCHEMA = {"name": "", "config": "", "overrides": []}
SMOKE = ["SOLVER.MAX_ITER", 2, "SOLVER.IMS_PER_BATCH", 2, "SOLVER.STEPS", "(1,)", "SOLVER.WARMUP_ITERS", 1,
         "SOLVER.CHECKPOINT_PERIOD", 1000, "TEST.EVAL_PERIOD", 0, "TEST.PRECISE_BN.NUM_ITER", 2,
         "DATALOADER.NUM_WORKERS", 0, "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", 96,
         "INPUT.MIN_SIZE_TEST", 64, "INPUT.MAX_SIZE_TEST", 96, "MODEL.RPN.PRE_NMS_TOPK_TRAIN", 200,
         "MODEL.RPN.POST_NMS_TOPK_TRAIN", 50, "MODEL.RPN.PRE_NMS_TOPK_TEST", 100, "MODEL.RPN.POST_NMS_TOPK_TEST", 50,
         "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 32]


@TASK_REGISTRY.register(name="detection")
class Detection(TransferTask):
    name, order = "detection", 30
    # seeds / estimators: [] = every pretraining seed / estimator (random init follows the seeds)
    schema = {"enabled": True, "num_gpus": 1, "tasks": [], "seeds": [], "estimators": []}
    tables = {"detection": "Detectron2 transfer (COCO-style AP)"}

    def check(self, section, where):
        check_estimators(section, where, self.name)
        tasks = []
        for t in section["tasks"]:
            check_keys(t, TASK_SCHEMA, where, "detection.tasks[].", error=SuiteError)
            t = {**TASK_SCHEMA, **t}
            if not t["name"] or not t["config"]:
                raise SuiteError(f"{where}: every detection task needs a name and a config.")
            if section["enabled"]:  # its config and overrides as ring-train-net will read them
                from transfer.detection.train_net import load_cfg

                try:
                    load_cfg(t["config"], [str(x) for x in t["overrides"]])
                except UserError as e:
                    raise SuiteError(f"{where}: detection task '{t['name']}': {e}") from None
            tasks.append(t)
        section["tasks"] = tasks

    def stages(self, section, ctx: EvalContext) -> list[Stage]:
        if not (section["tasks"] and self.applies(section, ctx)):
            return []
        pkl = ctx.dest / "model_final.pkl"
        stages = [Stage(f"export {ctx.tag}", py("transfer.detection.export", *ctx.source(evaluation=False), "-o", pkl, *ctx.opts), pkl,
                        ctx.dest / "export.log", kind="export", key=str(ctx.dest))]
        for t in section["tasks"]:
            det = ctx.dest / f"det_{t['name']}"
            fit = fit_overrides(t, ctx.weights) if ctx.weights else []
            cmd = py("transfer.detection.train_net", "--config-file", t["config"], "--num-gpus", section["num_gpus"],
                     "--resume", "-o", det, "MODEL.WEIGHTS", pkl, *t["overrides"], *fit)
            stages.append(Stage(f"{t['name']} {ctx.tag}", cmd, det / "summary.json", det.with_suffix(".log"),
                                {**suite_folders(ctx.out), **section.get("env", {})},
                                kind=ctx.kind("detection"),
                                key=t["config"] + (" baseline" if ctx.random_init else ""), needs=(pkl,),
                                node_args=("--num-machines", "{nodes}", "--machine-rank", "{node_rank}",
                                           "--dist-url", "tcp://{master_addr}:{master_port}")))
        return stages

    def smoke(self, section, data):
        if not section["tasks"]:
            return
        section["num_gpus"] = 2 if section["num_gpus"] > 1 else 1
        names = set().union(*(_datasets(t["config"]) for t in section["tasks"]))
        d2 = data / "detectron2"
        if not d2.exists():
            write_builtin_layouts(d2, names)
        section["env"] = {"DETECTRON2_DATASETS": str(d2)}  # for the train_net stages
        import torch

        device = [] if torch.cuda.is_available() else ["MODEL.DEVICE", "cpu"]  # the paper configs say cuda
        for t in section["tasks"]:
            t["overrides"] = [*t["overrides"], *SMOKE, *device]

    def rows(self, s):
        if s["stage"] != "detection":
            return []
        m = s["metrics"]
        return [Row("detection", f"{s.get('task', '')} {s['dataset']}: {LABELS[task]} {metric}", m[f"{task}/{metric}"])
                for task, metric in METRICS if f"{task}/{metric}" in m]


def fit_overrides(task: dict, weights: dict) -> list:
    """What makes a task's config build the ResNet a ``backbones:`` entry holds (its depth and width, through
    the any-width builder of the config's kind: FPN or C4), after the task's own overrides."""
    from transfer.detection.train_net import load_cfg

    depth, width = weights["depth"], weights["width"]  # read from the file when the suite loaded
    fpn = "fpn" in load_cfg(task["config"], task["overrides"]).MODEL.BACKBONE.NAME
    return ["MODEL.BACKBONE.NAME", f"build_resnet_any_width{'_fpn' if fpn else ''}_backbone", "MODEL.RESNETS.DEPTH",
            depth, "MODEL.RESNETS.STEM_OUT_CHANNELS", width, "MODEL.RESNETS.RES2_OUT_CHANNELS",
            width * (4 if depth >= 50 else 1)]


def _datasets(config: str) -> set[str]:
    from transfer.detection.train_net import load_cfg

    cfg = load_cfg(config)
    return set(cfg.DATASETS.TRAIN) | set(cfg.DATASETS.TEST)


def write_builtin_layouts(root: Path, names: set[str]) -> None:
    """Tiny files in Detectron2's builtin layouts under $DETECTRON2_DATASETS for the datasets ``names``."""
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
    unknown = sorted(n for n in names - known if builtin_set(n) is None)
    if unknown:
        raise UserError(f"--smoke has no tiny-data writer for the Detectron2 dataset '{unknown[0]}'; it writes "
                        "coco_2017_*, keypoints_coco_2017_*, voc_{2007,2012}_* and uses the built-in scenes_* and "
                        "trees_*.")
