"""ring-lincls: linear evaluation of a frozen pretrained backbone (BatchNorm in eval mode).

    ring-lincls runs/moco                      # the run's dataset, the run's LINCLS settings
    ring-lincls runs/moco -o runs/moco/lincls LINCLS.EPOCHS 30
    ring-lincls runs/moco --random-init        # the same backbone, randomly initialised: the baseline
    ring-lincls runs/moco --random-init SEED 7 # another random init
    ring-lincls runs/moco LINCLS.PROTOCOL paper  # the authors' protocol: augmented views through the encoder

``LINCLS.PROTOCOL`` names the recipe (``pretrain/lincls_protocols.py``): ``cached`` (the default: features
of un-augmented images computed once), ``paper`` (the authors' code) or ``moco`` (MoCo's).  The summary
records which one produced the number.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from .augment import TransformedDataset
from .contrastive.objectives import build_eval_backbone
from .checkpoint import backbone_state_dict, load_checkpoint
from .config import config_from_yaml_str, merge_overrides, result_fingerprint
from .data import build_dataset, labelled_split
from .common import CHECKPOINT_HELP, cli_main, command_parser, resolve_device
from .evaluate import extract_features, topk_accuracy, train_linear_probe
from .feature_cache import FeatureCache
from .io import atomic_write_text, write_summary
from .lincls_protocols import Protocol, build_protocol
from .lr_schedules import build_lr_lambda
from .seeding import seed_everything


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def load_backbone(checkpoint: str | Path, random_init: bool = False, opts: list[str] | None = None):
    """(config, backbone) from a pretraining run directory or checkpoint file, with ``KEY VALUE`` overrides
    applied first (so ``SEED`` picks the random init of the baseline)."""
    state = load_checkpoint(checkpoint)
    cfg = config_from_yaml_str(state["config"])
    cfg.defrost()
    merge_overrides(cfg, opts or [])
    cfg.freeze()
    torch.manual_seed(cfg.SEED)
    bb = build_eval_backbone(cfg)
    if not random_init:
        bb.load_state_dict(backbone_state_dict(state))
    return cfg, bb


def probe_through_encoder(bb, protocol: Protocol, cfg, train_set, test_set, num_classes: int, device,
                          lr_lambda) -> dict:
    """The linear layer trained on the protocol's training views passed through the frozen encoder every
    epoch (BatchNorm in eval mode, no gradient into the encoder), then scored on the test transform."""
    from torch.utils.data import DataLoader

    L = cfg.LINCLS
    loader = DataLoader(TransformedDataset(train_set, protocol.train_transform), batch_size=L.BATCH_SIZE,
                        shuffle=True, num_workers=cfg.DATA.NUM_WORKERS, drop_last=True,
                        generator=torch.Generator().manual_seed(cfg.SEED))
    clf = torch.nn.Linear(bb.feature_dim, num_classes).to(device)
    opt = torch.optim.SGD(clf.parameters(), lr=protocol.lr, momentum=protocol.momentum,
                          weight_decay=protocol.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
    bb.eval()
    for _ in range(L.EPOCHS):
        for x, y in loader:
            with torch.no_grad():
                f = bb(x.to(device))
            loss = F.cross_entropy(clf(f), y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    fte, yte = extract_features(bb, TransformedDataset(test_set, protocol.test_transform), device,
                                num_workers=cfg.DATA.NUM_WORKERS)
    with torch.no_grad():
        return topk_accuracy(clf(fte.to(device)).cpu(), yte)


def run_lincls(checkpoint: str | Path, out_dir: str | Path | None = None, opts: list[str] | None = None,
               random_init: bool = False, progress: bool = True) -> dict:
    cfg, bb = load_backbone(checkpoint, random_init, opts)
    seed_everything(cfg.SEED)
    device = resolve_device(cfg.DEVICE)
    bb.to(device).eval()
    for p in bb.parameters():
        p.requires_grad_(False)
    L = cfg.LINCLS
    protocol = build_protocol(cfg)
    train_set = build_dataset(cfg.DATA, labelled_split(cfg), L.MAX_TRAIN)
    test_set = build_dataset(cfg.DATA, cfg.DATA.TEST_SPLIT, L.MAX_TEST)
    iters = max(1, len(train_set) // L.BATCH_SIZE) * L.EPOCHS
    lr_lambda = build_lr_lambda(protocol.schedule, protocol.steps, 0.1, iters)
    src = Path(checkpoint)
    run_dir = src if src.is_dir() else src.parent
    out = Path(out_dir) if out_dir else run_dir / ("lincls_random_init" if random_init else "lincls")
    if protocol.cached:
        # features on disk (float16, memory-mapped) and streamed to the probe: memory bounded at any N
        with tempfile.TemporaryDirectory(prefix=".features-", dir=_mkdir(out)) as tmp:
            kw = dict(device=device, batch_size=256, num_workers=cfg.DATA.NUM_WORKERS, progress=progress)
            ftr = FeatureCache.write(bb, TransformedDataset(train_set, protocol.train_transform), folder=Path(tmp) / "train",
                                     desc="train features", **kw)
            fte = FeatureCache.write(bb, TransformedDataset(test_set, protocol.test_transform), folder=Path(tmp) / "test",
                                     desc="test features", **kw)
            n_cls = int(max(ftr.labels.max(), fte.labels.max())) + 1
            _, acc = train_linear_probe(ftr, fte, n_cls, L.EPOCHS, L.BATCH_SIZE, protocol.lr, protocol.momentum,
                                        protocol.weight_decay, lr_lambda, cfg.SEED, device=device, progress=progress)
            del ftr, fte  # close the memory maps before the folder goes
    else:
        n_cls = int(max(getattr(train_set, "targets", [0]))) + 1
        acc = probe_through_encoder(bb, protocol, cfg, train_set, test_set, n_cls, device, lr_lambda)
    atomic_write_text(out / "config.yaml", cfg.dump())
    return write_summary(out, stage="lincls", method=cfg.OBJECTIVE.NAME if not random_init else "random_init",
                         estimator=cfg.OBJECTIVE.ESTIMATOR if not random_init else "none",
                         backbone=cfg.MODEL.BACKBONE, dataset=cfg.DATA.NAME, seed=cfg.SEED,
                         metrics=acc, checkpoint=str(src), protocol=protocol.name, config=result_fingerprint(cfg))


@cli_main("ring-lincls")
def main(argv: list[str] | None = None) -> int:
    p = command_parser("ring-lincls", __doc__, checkpoint=CHECKPOINT_HELP,
                       output="output directory (default: <run dir>/lincls)")
    p.add_argument("--random-init", action="store_true", help="evaluate the same backbone with random weights")
    p.add_argument("opts", nargs="*", help="KEY VALUE overrides, e.g. LINCLS.EPOCHS 30")
    args = p.parse_intermixed_args(argv)
    s = run_lincls(args.checkpoint, args.output, args.opts, args.random_init)
    m = s["metrics"]
    print(f"[ring-lincls] {s['method']}-{s['estimator']} {s['backbone']} on {s['dataset']} ({s['protocol']} protocol): "
          f"top-1 {m['top1']:.2f}%, top-5 {m['top5']:.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
