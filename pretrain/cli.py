"""ring-pretrain: contrastive pretraining from a config file plus KEY VALUE overrides.

    ring-pretrain -c cpu_small -o runs/moco OBJECTIVE.ESTIMATOR ring
    ring-pretrain -c data/cifar10 -c objective/moco -c anneal -o runs/c10 OBJECTIVE.ESTIMATOR ring
    ring-pretrain -o runs/moco --resume                 # continue from runs/moco/checkpoint_last.pth
    torchrun --nproc_per_node 8 -m pretrain.cli -c cifar10/moco_ring -o runs/c10
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pretrain.common import UserError, cli_main, command_parser, user_message
from pretrain.config import ConfigError, config_from_yaml_str, load_config, merge_overrides
from pretrain.engine.checkpoint import LAST, load_checkpoint


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("ring-pretrain", __doc__, output="run directory (default: OUTPUT_DIR or runs/<name>-<time>)")
    p.add_argument("--config", "-c", action="append", default=None,
                   help="YAML file or a name in pretrain/configs (e.g. cpu_small, data/cifar10, objective/moco, anneal, "
                        "cifar10/moco_ring); repeat to compose, later files win")
    p.add_argument("--resume", action="store_true", help="continue from <run dir>/checkpoint_last.pth")
    p.add_argument("--auto-resume", action="store_true",
                   help="resume when the run directory holds a checkpoint, else start it (a finished run just "
                        "re-reports)")
    p.add_argument("opts", nargs="*", help="KEY VALUE overrides, e.g. SOLVER.EPOCHS 10")
    return p


def resolve_run(args) -> tuple[object, Path]:
    if args.resume:
        if not args.output:
            raise ConfigError("--resume needs the run directory: ring-pretrain -o RUN_DIR --resume.")
        run_dir = Path(args.output)
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
    name = "_".join(Path(c).stem for c in args.config) if args.config else "default"
    run_dir = Path(args.output or cfg.OUTPUT_DIR or f"runs/{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    if (run_dir / LAST).exists():
        raise ConfigError(f"{run_dir} already holds a run ({LAST}); add --resume to continue it or choose "
                          "another -o.")
    return cfg, run_dir


def resume_hint(trainer) -> str:
    """Where a stopped run stands: its last checkpoint and the command that continues it."""
    if trainer.saved_iter is None or not (trainer.run_dir / LAST).exists():
        return f"no checkpoint was written yet; start again (ring-pretrain -o {trainer.run_dir} ...)."
    return (f"the last checkpoint ({trainer.run_dir / LAST}) holds iteration {trainer.saved_iter}: continue with "
            f"ring-pretrain -o {trainer.run_dir} --resume.")


@cli_main("ring-pretrain")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    if args.auto_resume and args.output and (Path(args.output) / LAST).exists():
        args.resume, args.config = True, None
    cfg, run_dir = resolve_run(args)
    from pretrain import distributed as D
    from pretrain.engine.hooks import StopBetweenSteps
    from pretrain.engine.trainer import Trainer

    trainer = Trainer(cfg, run_dir, resume=args.resume)
    stop = StopBetweenSteps()  # last among the hooks: a checkpoint due at this step is written first
    trainer.hooks.append(stop)
    try:
        with stop.installed():
            summary = trainer.train()
    except KeyboardInterrupt:
        if D.is_main():
            print(f"ring-pretrain: interrupted at iteration {trainer.iter}; {resume_hint(trainer)}", file=sys.stderr)
        return 130
    except UserError as e:  # mid-run (a full disk, an unreadable image): what was kept, and how to go on
        raise UserError(f"{user_message(e).rstrip('.')}; {resume_hint(trainer)}") from None

    if D.is_main():
        m = summary["metrics"]
        knn = f", kNN top-1 {m['knn_top1']:.2f}%" if "knn_top1" in m else ""
        print(f"[ring-pretrain] done: {m['iters']} iterations, loss {m['loss']:.4f}, {m['img_per_s']:.1f} img/s"
              f"{knn} -> {run_dir}")
    D.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
