"""Train and evaluate a Detectron2 config the way Detectron2's own ``tools/train_net.py`` does, written only
against Detectron2's public API (no ringnce import): the proof that the installed Detectron2 serves any
script, and the shortest path for users who keep their own Detectron2 tooling.

    ring-export resnet18.pth -o r18.pkl
    DETECTRON2_DATASETS=/data python tools/detectron2_train_net.py \\
        --config-file detectron_configs/coco/mask_rcnn_R_18_FPN_1x.yaml MODEL.WEIGHTS r18.pkl

The configs under detectron_configs/coco/ use Detectron2's own keys and builtin datasets only
(``coco_2017_*``, ``keypoints_coco_2017_*`` under $DETECTRON2_DATASETS).  ``ring-train-net`` adds our
datasets, the CMC and any-width backbones, resumable data order and a summary.json for the tables.
"""
import os

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup, launch
from detectron2.evaluation import COCOEvaluator


class Trainer(DefaultTrainer):
    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        # COCOEvaluator with its default arguments (the fast C++ evaluator where it is built)
        return COCOEvaluator(dataset_name, output_dir=output_folder or os.path.join(cfg.OUTPUT_DIR, "inference"))


def setup(args):
    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        return Trainer.test(cfg, model)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
