"""ring-train-net: Detectron2's train_net with our configs, datasets, heads and evaluators.

    ring-train-net --config-file cpu/scenes_mask_rcnn_R_18_FPN.yaml -o runs/moco/det_scenes \\
        MODEL.WEIGHTS runs/moco/model_final.pkl
    ring-train-net --config-file moco/mask_rcnn_R_50_FPN_1x_moco.yaml --num-gpus 8 -o runs/coco_r50 \\
        MODEL.WEIGHTS r50.pkl
    ring-train-net --config-file ... --eval-only -o runs/coco_r50 MODEL.WEIGHTS runs/coco_r50/model_final.pth

Flags are Detectron2's (--config-file, --num-gpus, --num-machines, --machine-rank, --dist-url, --resume,
--eval-only, trailing KEY VALUE overrides; OUTPUT_DIR works as an override too), plus -o/--output (the
output directory, as every ringnce command), --dataset NAME JSON IMAGE_DIR to register any
COCO-format json (repeatable) and --keypoint-flip-map for its keypoints.  Registered here besides
Detectron2's builtin COCO 2017 / VOC 2007+2012 (under $DETECTRON2_DATASETS): the synthetic scenes
(scenes_{instances,keypoints}_{train,val}, generated on first use under $RINGNCE_SCENES, default
data/scenes), the tree-crown photos (trees_{train,val}, cut from the deepforest wheel's tiles under
$RINGNCE_TREES, default data/trees), the Res5ROIHeadsExtraNorm head (MoCo's C4 recipe) and the CMC two-stream backbone.
Results: COCO box/mask/keypoint AP (OKS sigmas from TEST.KEYPOINT_OKS_SIGMAS), VOC AP/AP50/AP75, and
OUTPUT_DIR/summary.json with AP, AP50 and AP75 per task.
"""
from __future__ import annotations

import json
import os
import pickle
import sys
import time
from pathlib import Path

from transfer.detectron2_compat import ensure

ensure()  # one sentence if Detectron2 is missing or an outdated build, before importing it

import detectron2.utils.comm as comm  # noqa: E402
from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.config import get_cfg  # noqa: E402
from detectron2.data import (DatasetCatalog, MetadataCatalog, build_detection_train_loader,  # noqa: E402
                             get_detection_dataset_dicts)
from detectron2.data.datasets import register_coco_instances  # noqa: E402
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup, hooks, launch  # noqa: E402
from detectron2.evaluation import COCOEvaluator, PascalVOCDetectionEvaluator  # noqa: E402

from pretrain.common import NumpyOnlyUnpickler, add_output, cli_main, find_file  # noqa: E402
from pretrain.config import closest_key  # noqa: E402
from pretrain.io import write_summary  # noqa: E402
from pretrain.modeling.weight_formats import depth_of, detectron2_to_torchvision  # noqa: E402

from transfer.detection import CONFIG_ROOT, TransferError  # noqa: E402
from transfer.detection import heads  # noqa: E402,F401  (registers Res5ROIHeadsExtraNorm and the CMC backbone)
from transfer.detection.resume import (STATE_KEY, ResumableTrainingSampler, ResumePoint, RunState,  # noqa: E402
                                       detach_from_global_rng, resume_point)
from transfer.detection.builtin_sets import builtin_set  # noqa: E402



# -- datasets ----------------------------------------------------------------------------------------
def _set_keypoint_meta(name: str, keypoint_names, flip_map) -> None:
    MetadataCatalog.get(name).set(keypoint_names=list(keypoint_names), keypoint_flip_map=[tuple(p) for p in flip_map],
                                  keypoint_connection_rules=[])


def register_builtin(names, root: str | Path | None = None) -> None:
    """Register the built-in sets among ``names`` (``builtin_sets``: synthetic scenes, tree-crown photos),
    writing their files on first use under the set's $ENV folder (or ``root``)."""
    for name in names:
        s = builtin_set(name)
        if s is None or name in DatasetCatalog.list():
            continue
        folders = s.ensure(Path(root or os.environ.get(s.env, s.folder)))
        if name not in folders:
            raise TransferError(f"dataset '{name}' is not {s.what}; choose one of {', '.join(sorted(folders))}.")
        folder = folders[name]
        register_coco_instances(name, {}, str(folder / "annotations.json"), str(folder / "images"))
        if s.keypoints and "keypoints" in name:
            _set_keypoint_meta(name, *s.keypoints)


def register_custom(name: str, json_file: str, image_root: str, flip_map: str | None) -> None:
    """Any COCO-format json; keypoint data needs a flip map (--keypoint-flip-map left:right,... or 'none')."""
    if not Path(json_file).is_file():
        raise TransferError(f"dataset '{name}': the annotation file {json_file} does not exist; pass an existing "
                            "COCO-format json to --dataset NAME JSON IMAGE_DIR.")
    if not Path(image_root).is_dir():
        raise TransferError(f"dataset '{name}': the image folder {image_root} does not exist.")
    with open(json_file) as f:
        cats = json.load(f).get("categories", [])
    kp_names = next((c["keypoints"] for c in cats if c.get("keypoints")), None)
    register_coco_instances(name, {}, json_file, image_root)
    if kp_names:
        if flip_map is None:
            raise TransferError(f"dataset '{name}' has keypoints ({', '.join(kp_names)}) but no flip map: pass "
                                "--keypoint-flip-map with pairs like left_eye:right_eye,... (or 'none' if no "
                                "keypoint has a mirror twin).")
        pairs = [] if flip_map == "none" else [tuple(p.split(":")) for p in flip_map.split(",")]
        unknown = [k for p in pairs for k in p if k not in kp_names]
        if unknown or any(len(p) != 2 for p in pairs):
            raise TransferError(f"--keypoint-flip-map: '{flip_map}' must be a:b pairs of the dataset's keypoint names "
                                f"({', '.join(kp_names)}).")
        _set_keypoint_meta(name, kp_names, pairs)


# -- config ------------------------------------------------------------------------------------------
def resolve_config(config_file: str) -> Path:
    """A path, or one relative to detectron_configs/ (e.g. cpu/scenes_mask_rcnn_R_18_FPN.yaml)."""
    return find_file(config_file, CONFIG_ROOT, "Detectron2 config file", pattern="*/*.yaml", error=TransferError)


def load_cfg(config_file: str, opts: list[str] | None = None):
    """Detectron2's defaults <- the YAML (with its _BASE_ chain) <- KEY VALUE overrides."""
    path = resolve_config(config_file)
    cfg = get_cfg()
    heads.add_cmc_config(cfg)
    for source, merge in ((str(path), lambda: cfg.merge_from_file(str(path))),
                          ("command line", lambda: cfg.merge_from_list(list(opts or [])))):
        try:
            merge()
        except (KeyError, AssertionError, ValueError) as e:
            msg = str(e.args[0] if e.args else e)
            if "Non-existent" in msg:
                hint = closest_key(cfg, msg.rpartition(" ")[2])
                raise TransferError(f"{source}: {msg} (not a Detectron2 config key){hint}; fix or remove it.") from None
            raise TransferError(f"{source}: bad value ({msg}).") from None
    return cfg


def check_cfg(cfg) -> None:
    if cfg.MODEL.KEYPOINT_ON:
        n = cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS
        if n != 17 and len(cfg.TEST.KEYPOINT_OKS_SIGMAS) != n:
            raise TransferError(f"MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS is {n} (not COCO's 17): set "
                                f"TEST.KEYPOINT_OKS_SIGMAS to {n} per-keypoint sigmas.")
    weights = cfg.MODEL.WEIGHTS
    if weights and not weights.startswith(("detectron2://", "http")) and not Path(weights).is_file():
        raise TransferError(f"MODEL.WEIGHTS {weights} does not exist; export one with ring-export CKPT -o FILE.pkl.")
    check_weights_fit(cfg)


def read_pkl(weights: str) -> dict:
    """A Detectron2 .pkl's contents ({} for anything else: Detectron2 itself will load or reject it)."""
    if not weights.endswith(".pkl") or not Path(weights).is_file():
        return {}
    try:
        with open(weights, "rb") as f:  # arrays and plain containers only: a .pkl cannot run code here
            data = NumpyOnlyUnpickler(f).load()
    except pickle.UnpicklingError:
        return {}
    return data if isinstance(data, dict) else {}


def weights_source(weights: str) -> dict:
    """What ring-export recorded about the pretraining run behind a .pkl (method, estimator, backbone)."""
    return read_pkl(weights).get("ringnce_source", {})


def check_weights_fit(cfg) -> None:
    """The ResNet in MODEL.WEIGHTS has the config's depth and width: otherwise Detectron2 would skip the
    misshapen tensors with a log line and train a partly random backbone."""
    model = read_pkl(cfg.MODEL.WEIGHTS).get("model", {})
    if "stem.conv1.weight" not in model:
        return  # not a single-stream ResNet of ours (CMC streams are checked by their own builder's shapes)
    depth = depth_of(detectron2_to_torchvision(k) for k in model)
    width = int(model["stem.conv1.weight"].shape[0])
    r = cfg.MODEL.RESNETS
    if depth is None or (depth, width) == (r.DEPTH, r.STEM_OUT_CHANNELS):
        return
    res2 = width * (4 if depth >= 50 else 1)
    fix = f"MODEL.RESNETS.DEPTH {depth} MODEL.RESNETS.STEM_OUT_CHANNELS {width} MODEL.RESNETS.RES2_OUT_CHANNELS {res2}"
    if width != 64:
        fix += " and an any-width backbone (MODEL.BACKBONE.NAME build_resnet_any_width_fpn_backbone, or ..._backbone for C4)"
    raise TransferError(f"MODEL.WEIGHTS {cfg.MODEL.WEIGHTS} holds a ResNet-{depth} of width {width} but the config "
                        f"builds a ResNet-{r.DEPTH} of width {r.STEM_OUT_CHANNELS}; set {fix}.")


# -- training ----------------------------------------------------------------------------------------
class Trainer(DefaultTrainer):
    """Detectron2's trainer with our evaluators; it keeps the last evaluation's results (``eval_results``)
    for the summary, through its own evaluation hook (``build_hooks``), and resumes its data stream where
    a checkpoint stopped (``resume.py``)."""

    eval_results: dict | None = None

    def __init__(self, cfg, resume_from: ResumePoint | None = None):
        self.resume_from = resume_from
        super().__init__(cfg)
        self.checkpointer.checkpointables[STATE_KEY] = RunState(self.sampler_seed)

    def state_dict(self):
        """Detectron2 0.6's DefaultTrainer leaves the optimizer out of its checkpoints (momentum buffers
        are lost on resume); it goes back in here."""
        state = super().state_dict()
        state["optimizer"] = self.optimizer.state_dict()
        return state

    def load_state_dict(self, state):
        super().load_state_dict(state)
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])

    def build_train_loader(self, cfg):
        """Detectron2's train loader over a sampler that skips what the resumed run already consumed."""
        dataset = get_detection_dataset_dicts(
            cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
            min_keypoints=cfg.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE if cfg.MODEL.KEYPOINT_ON else 0,
            proposal_files=cfg.DATASETS.PROPOSAL_FILES_TRAIN if cfg.MODEL.LOAD_PROPOSALS else None)
        point = self.resume_from
        if cfg.DATALOADER.SAMPLER_TRAIN != "TrainingSampler":  # Detectron2's own, restarting on resume
            self.sampler_seed = -1
            return build_detection_train_loader(cfg, dataset=dataset)
        seed = point.sampler_seed if point and point.sampler_seed is not None else (
            cfg.SEED if cfg.SEED >= 0 else comm.shared_random_seed())
        self.sampler_seed = seed
        per_rank = cfg.SOLVER.IMS_PER_BATCH // comm.get_world_size()
        skip = point.start_iter * per_rank if point else 0
        loader = build_detection_train_loader(cfg, dataset=dataset,
                                              sampler=ResumableTrainingSampler(len(dataset), seed, skip))
        return detach_from_global_rng(loader, seed)

    def build_hooks(self):
        out = super().build_hooks()
        keep = hooks.EvalHook(self.cfg.TEST.EVAL_PERIOD, self._test_and_keep)
        return [keep if isinstance(h, hooks.EvalHook) else h for h in out]

    def _test_and_keep(self):
        self.eval_results = self.test(self.cfg, self.model)
        return self.eval_results

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if dataset_name.startswith("voc_"):
            return PascalVOCDetectionEvaluator(dataset_name)
        tasks = ("bbox",) + (("segm",) if cfg.MODEL.MASK_ON else ()) + (("keypoints",) if cfg.MODEL.KEYPOINT_ON else ())
        return COCOEvaluator(dataset_name, tasks=tasks, output_dir=output_folder or os.path.join(cfg.OUTPUT_DIR,
                             "inference"), use_fast_impl=False, kpt_oks_sigmas=cfg.TEST.KEYPOINT_OKS_SIGMAS)


def flatten_results(results: dict) -> dict[str, float]:
    """{'bbox': {'AP': .., 'AP50': ..}, ...} (one dataset) -> {'bbox/AP': .., ...}; AP, AP50, AP75 per task."""
    if results and all(isinstance(v, dict) and all(isinstance(x, dict) for x in v.values()) for v in results.values()):
        results = next(iter(results.values()))  # several test sets: the first one
    out = {}
    for task, metrics in results.items():
        for key in ("AP", "AP50", "AP75"):
            if key in metrics:
                out[f"{task}/{key}"] = float(metrics[key])
    return out


def setup(args):
    args.config_file = str(resolve_config(args.config_file))
    cfg = load_cfg(args.config_file, args.opts + (["OUTPUT_DIR", args.output] if args.output else []))
    for spec in args.dataset or []:
        register_custom(*spec, flip_map=args.keypoint_flip_map)
    register_builtin(list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST))
    check_cfg(cfg)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def train(args):
    """One process's work (Detectron2's ``launch`` target): train or evaluate, then write the summary."""
    cfg = setup(args)
    t0 = time.perf_counter()
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        results, iters = Trainer.test(cfg, model), 0
    else:
        point = resume_point(cfg.OUTPUT_DIR) if args.resume else None
        trainer = Trainer(cfg, point)
        trainer.resume_or_load(resume=args.resume)
        start = trainer.start_iter
        if point and start != point.start_iter:
            raise RuntimeError(f"resumed at iteration {start}, but the data stream was positioned for "
                               f"{point.start_iter}")
        trainer.train()
        results = trainer.eval_results
        iters = cfg.SOLVER.MAX_ITER - start
    seconds = time.perf_counter() - t0
    if comm.is_main_process():
        src = weights_source(cfg.MODEL.WEIGHTS)
        metrics = flatten_results(results or {})
        if iters:
            metrics["seconds"] = seconds
            metrics["iters"] = iters
        write_summary(cfg.OUTPUT_DIR, stage="detection", method=src.get("method", "unknown"),
                      estimator=src.get("estimator", "none"), backbone=f"R-{cfg.MODEL.RESNETS.DEPTH}",
                      dataset=cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "", seed=src.get("seed", cfg.SEED),
                      metrics=metrics, detectron2_config=args.config_file, task=_task(cfg),
                      weights=cfg.MODEL.WEIGHTS, detectron2_seed=cfg.SEED, config=src.get("config", {}),
                      **({"name": src["name"]} if src.get("name") else {}))
        print(f"[ring-train-net] {_task(cfg)}: " + ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()
                                                             if "/" in k))
    return results


def _task(cfg) -> str:
    arch = "C4" if cfg.MODEL.ROI_HEADS.NAME.startswith("Res5") else "FPN"
    kind = "keypoint_rcnn" if cfg.MODEL.KEYPOINT_ON else ("mask_rcnn" if cfg.MODEL.MASK_ON else "faster_rcnn")
    return f"{kind}_{arch}"


def build_parser():
    p = default_argument_parser(epilog=__doc__)
    p.add_argument("--dataset", nargs=3, action="append", metavar=("NAME", "JSON", "IMAGE_DIR"),
                   help="register a COCO-format dataset (repeatable)")
    p.add_argument("--keypoint-flip-map", default=None, help="for keypoint --dataset: a:b,c:d pairs, or 'none'")
    add_output(p, "output directory (the same as the override OUTPUT_DIR)")
    return p


@cli_main("ring-train-net")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    if args.num_gpus > 1 and not torch.cuda.is_available():
        if args.num_machines > 1:
            raise TransferError("--num-machines > 1 needs CUDA; on CPU, --num-gpus N runs N gloo processes on this "
                                "machine only.")
        from transfer.detection.cpu_launch import launch_cpu

        launch_cpu(train, args.num_gpus, args.dist_url, (args,))
        return 0
    if args.num_gpus > 1 and torch.cuda.device_count() < args.num_gpus:
        raise TransferError(f"--num-gpus {args.num_gpus} needs {args.num_gpus} CUDA devices and this machine has "
                            f"{torch.cuda.device_count()}; use --num-gpus {torch.cuda.device_count()} or fewer.")
    launch(train, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
    return 0


if __name__ == "__main__":
    sys.exit(main())
