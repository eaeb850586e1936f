"""ring-lincls: linear evaluation of a frozen pretrained backbone (BatchNorm in eval mode).

    ring-lincls runs/moco                      # the run's dataset, the run's LINCLS settings
    ring-lincls runs/moco -o runs/moco/lincls LINCLS.EPOCHS 30
    ring-lincls runs/moco --random-init        # the same backbone, randomly initialised: the baseline
    ring-lincls runs/moco --random-init SEED 7 # another random init
    ring-lincls runs/moco LINCLS.PROTOCOL paper  # the authors' protocol: augmented views through the encoder
    ring-lincls --weights resnet50.pth -c data/cifar10_paper224   # any backbone: its file, your data settings
    ring-lincls --weights moco_v2_800ep.pth.tar --name mocov2 -c data/stl10 LINCLS.EPOCHS 100

``LINCLS.PROTOCOL`` names the recipe (``pretrain/evaluation/protocols.py``): ``cached`` (the default: features
of un-augmented images computed once), ``paper`` (the authors' code) or ``moco`` (MoCo's).  The summary
records which one produced the number.
"""
from __future__ import annotations

import sys

from pretrain.common import cli_main, evaluation_parser, weights_source
from pretrain.config import row_name
from pretrain.evaluation.linear import run_lincls


@cli_main("ring-lincls")
def main(argv: list[str] | None = None) -> int:
    args = evaluation_parser("ring-lincls", __doc__, "lincls", "LINCLS.EPOCHS 30").parse_intermixed_args(argv)
    source, weights = weights_source(args)
    s = run_lincls(source, args.output, args.opts, args.random_init, weights=weights)
    m = s["metrics"]
    best = (f"; best epoch {m['best_epoch']}: top-1 {m['top1_best']:.2f}% (chosen on the test split)"
            if "top1_best" in m else "")
    print(f"[ring-lincls] {row_name(s)} {s['backbone']} on {s['dataset']} ({s['protocol']} protocol): "
          f"top-1 {m['top1']:.2f}%, top-5 {m['top5']:.2f}%" + (" (last epoch)" if best else "") + best)
    return 0


if __name__ == "__main__":
    sys.exit(main())
