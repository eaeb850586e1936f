"""ring-knn: weighted kNN top-1 of a frozen backbone (the kNN monitor's measure, on any run, after the fact).

    ring-knn runs/moco                       # the run's dataset and KNN.* settings -> runs/moco/knn
    ring-knn runs/moco KNN.K 20 -o runs/moco/knn_k20
    ring-knn runs/moco --random-init         # the same architecture untrained at the run's seed
    ring-knn --weights resnet50.pth -c data/cifar10_paper224      # any backbone, with your data settings

The summary records the pretraining run's configuration (so its row is the run's row in ring-results) and
the kNN settings it used (``k``, ``temperature``, in the column's name).
"""
from __future__ import annotations

import sys
from pathlib import Path

from pretrain.common import cli_main, evaluation_parser, resolve_device, weights_source
from pretrain.config import ConfigError, merge_overrides, provenance, row_name

from pretrain.engine.seeding import seed_everything
from pretrain.evaluation.knn import knn_top1
from pretrain.evaluation.pretrained import default_output, is_run, load_backbone
from pretrain.io import atomic_write_text, write_summary


def run_knn(checkpoint: str | Path, out_dir: str | Path | None = None, opts: list[str] | None = None,
            random_init: bool = False, weights: dict | None = None) -> dict:
    """``weights``: ``load_backbone``'s keywords for a weights file (its -c config and ``opts`` set the data)."""
    opts = list(opts or [])
    if not is_run(checkpoint):
        cfg, bb = load_backbone(checkpoint, random_init, opts, **(weights or {}))
        run_cfg = cfg
    else:
        foreign = [k for k in opts[0::2] if not k.startswith(("KNN.", "DEVICE", "DATA.NUM_WORKERS", "DATA.ROOT"))]
        if foreign:
            raise ConfigError(f"ring-knn takes KNN.*, DEVICE, DATA.ROOT and DATA.NUM_WORKERS overrides, not "
                              f"{foreign[0]}; other keys change the model, which is the run's.")
        run_cfg, bb = load_backbone(checkpoint, random_init, **(weights or {}))  # the run's config: its table row
        cfg = run_cfg.clone()
        cfg.defrost()
        merge_overrides(cfg, opts, "ring-knn")
        cfg.freeze()
    seed_everything(cfg.SEED)
    device = resolve_device(cfg.DEVICE)
    bb.to(device).eval()
    top1 = knn_top1(bb, cfg, device)
    src = Path(checkpoint)
    out = Path(out_dir) if out_dir else default_output(src, cfg, "knn", random_init)
    atomic_write_text(out / "config.yaml", cfg.dump())
    return write_summary(out, stage="knn", **provenance(run_cfg, random_init), metrics={"top1": top1},
                         checkpoint=str(src), k=cfg.KNN.K, temperature=cfg.KNN.TEMPERATURE)


@cli_main("ring-knn")
def main(argv: list[str] | None = None) -> int:
    args = evaluation_parser("ring-knn", __doc__, "knn", "KNN.K 20").parse_intermixed_args(argv)
    source, weights = weights_source(args)
    s = run_knn(source, args.output, args.opts, args.random_init, weights)
    print(f"[ring-knn] {row_name(s)} {s['backbone']} on {s['dataset']} (k={s['k']}): "
          f"top-1 {s['metrics']['top1']:.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
