"""ring-pretrain: contrastive pretraining from a config file plus KEY VALUE overrides.

    ring-pretrain --config cpu_small -o runs/moco OBJECTIVE.ESTIMATOR ring
    ring-pretrain -o runs/moco --resume                 # continue from runs/moco/checkpoint_last.pth
    torchrun --nproc_per_node 8 -m pretrain.cli --config cifar10_moco -o runs/c10
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .checkpoint import LAST, CheckpointError, load_checkpoint
from .config import ConfigError, config_from_yaml_str, load_config, merge_overrides
from .data import DatasetError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ring-pretrain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", "-c", default=None, help="YAML file or a name in pretrain/configs (e.g. cpu_small)")
    p.add_argument("--output-dir", "-o", default=None, help="run directory (default: OUTPUT_DIR or runs/<name>)")
    p.add_argument("--resume", action="store_true", help="continue from <run dir>/checkpoint_last.pth")
    p.add_argument("--auto-resume", action="store_true",
                   help="resume when the run directory holds a checkpoint, else start it (a finished run just "
                        "re-reports)")
    p.add_argument("opts", nargs="*", help="KEY VALUE overrides, e.g. SOLVER.EPOCHS 10")
    return p


def resolve_run(args) -> tuple[object, Path]:
    if args.resume:
        if not args.output_dir:
            raise ConfigError("--resume needs the run directory: ring-pretrain -o RUN_DIR --resume.")
        run_dir = Path(args.output_dir)
        state = load_checkpoint(run_dir / LAST)
        cfg = config_from_yaml_str(state["config"])
        cfg.defrost()
        if args.config:
            # a config given on resume must describe the same run; the engine checks the key fields
            cfg = load_config(args.config, None)
            cfg.defrost()
        merge_overrides(cfg, args.opts)
        cfg.freeze()
        return cfg, run_dir
    cfg = load_config(args.config, args.opts)
    name = Path(args.config).stem if args.config else "default"
    run_dir = Path(args.output_dir or cfg.OUTPUT_DIR or f"runs/{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    if (run_dir / LAST).exists():
        raise ConfigError(f"{run_dir} already holds a run ({LAST}); add --resume to continue it or choose "
                          "another -o.")
    return cfg, run_dir


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    if args.auto_resume and args.output_dir and (Path(args.output_dir) / LAST).exists():
        args.resume, args.config = True, None
    try:
        cfg, run_dir = resolve_run(args)
        from .engine import Trainer

        summary = Trainer(cfg, run_dir, resume=args.resume).train()
    except (ConfigError, CheckpointError, DatasetError, ValueError) as e:
        print(f"ring-pretrain: error: {e}", file=sys.stderr)
        return 2
    from . import distributed as D

    if D.is_main():
        m = summary["metrics"]
        knn = f", kNN top-1 {m['knn_top1']:.2f}%" if "knn_top1" in m else ""
        print(f"[ring-pretrain] done: {m['iters']} iterations, loss {m['loss']:.4f}, {m['img_per_s']:.1f} img/s"
              f"{knn} -> {run_dir}")
    D.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
