"""Checkpoint size and disk per run of the paper suites, computed from the model, optimizer and pool sizes.

    python tools/checkpoint_sizes.py          # the README's disk table

A checkpoint holds the objective's state (encoders, key encoder, queue or banks: fp32), the SGD momentum
buffers (one per trainable parameter) and a few kilobytes of positions and RNG states.  With the retention
policy (CHECKPOINT.KEEP_EVERY 50 of 200 epochs) a finished run keeps checkpoint_e0050/0100/0150/0200, the
last of which is checkpoint_last.pth (a hard link): four files.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pretrain.config import load_config  # noqa: E402
from pretrain.contrastive.objectives import build_objective  # noqa: E402

TRAIN_IMAGES = {"cifar10": 50_000, "cifar100": 50_000, "stl10": 5_000, "imagenet": 1_281_167}
SUITES = {  # suite: (config template, datasets, objectives, estimators x seeds, overrides)
    "paper_cifar": ("{d}_paper224/{o}_nce", ["cifar10", "cifar100", "stl10"], ["ir", "cmc", "moco", "simclr"], 2 * 3, []),
    "paper_cifar_fast": ("{d}/{o}_nce", ["cifar10", "cifar100", "stl10"], ["ir", "cmc", "moco", "simclr"], 2 * 3, []),
    "paper_imagenet": ("imagenet/{o}_nce", ["imagenet"], ["moco", "ir"], 2, ["MODEL.BACKBONE", "resnet50",
                                                                           "MODEL.HEAD_HIDDEN", "2048"]),
}


def checkpoint_bytes(config: str, dataset: str, overrides: list[str]) -> int:
    cfg = load_config(config, overrides)
    with torch.device("meta"):
        obj = build_objective(cfg, dataset_size=TRAIN_IMAGES[dataset], global_batch=cfg.SOLVER.BATCH_SIZE)
    state = sum(t.numel() * t.element_size() for t in obj.state_dict().values())
    momentum = sum(p.numel() * p.element_size() for p in obj.parameters() if p.requires_grad)
    return state + momentum


def main() -> int:
    print("| suite | dataset | objective | checkpoint (MB) | kept files | disk per run (GB) | runs | suite total (GB) |")
    print("|---|---|---|---|---|---|---|---|")
    for suite, (template, datasets, objectives, runs, overrides) in SUITES.items():
        total = 0.0
        for d in datasets:
            for o in objectives:
                mb = checkpoint_bytes(template.format(d=d, o=o), d, overrides) / 1e6
                per_run = 4 * mb / 1e3
                total += per_run * runs
                print(f"| {suite} | {d} | {o} | {mb:,.0f} | 4 | {per_run:.2f} | {runs} | {per_run * runs:.1f} |")
        print(f"| **{suite}** | | | | | | | **{total:.1f}** |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
