"""ring-meta-dataset: few-shot evaluation of a frozen backbone on Meta-Dataset sources.

    ring-meta-dataset runs/moco --records data/meta_dataset --sources fashion_mnist animal_mnist -o runs/moco/md
    ring-meta-dataset runs/moco --records /data/md --sources ilsvrc_2012 omniglot aircraft \\
        --protocol 5w5s --classifier logreg --episodes 600 --image-size 84
    ring-meta-dataset runs/moco --random-init --records data/meta_dataset --sources animal_mnist  # its baseline
    ring-meta-dataset --backbone resnet18 --records data/meta_dataset --sources animal_mnist   # random init
    ring-meta-dataset --weights resnet50.pth --records data/meta_dataset --sources animal_mnist  # any backbone

Protocols: ``variable`` (the benchmark's variable-way variable-shot episodes), ``5w1s`` and ``5w5s`` (5
classes, 1 or 5 shots, 15 queries; classes smaller than that are left out, and counted), and
``linear_halves`` (ours, not a published protocol: each class's images split in half with a fixed seed, one
linear layer per source on standardised frozen features, SGD lr 0.1 with a cosine schedule, 100 epochs).
Each source's images are encoded once and cached (``--cache-dir``).  Reported per source: the mean
accuracy (%) and the half-width of its 95% confidence interval (over episodes, or binomial for linear).
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from meta_dataset.classifiers import CLASSIFIER_REGISTRY, mean_ci95
from meta_dataset.episodes import PROTOCOLS, EpisodeSampler
from meta_dataset.features import source_features
from meta_dataset.sources import Source
from pretrain.common import (CHECKPOINT_HELP, UserError, add_weights_arguments, cli_main, command_parser,
                             resolve_device, weights_source)
from pretrain.config import row_name
from pretrain.io import atomic_write_text, write_summary


def load_model(checkpoint: str | None, backbone: str | None, seed: int = 0, random_init: bool = False,
               weights: dict | None = None, opts: list[str] | None = None):
    """(backbone module, description dict, default image size).  ``random_init`` with a checkpoint: the run's
    own architecture, untrained, initialised from its SEED (the baseline paired with it).  ``weights``:
    ``load_backbone``'s keywords for a weights file (its image size: the -c config's, else 84)."""
    if checkpoint:
        from pretrain.config import provenance
        from pretrain.evaluation.pretrained import load_backbone

        weights = weights or {}
        cfg, bb = load_backbone(checkpoint, random_init, opts, **weights)
        size = 84 if cfg.WEIGHTS.SHA256 and not weights.get("config") else cfg.DATA.IMAGE_SIZE
        return bb, provenance(cfg, random_init), size
    from pretrain.modeling.backbones import build_backbone

    torch.manual_seed(seed)
    return build_backbone(backbone), {"method": "random_init", "estimator": "none", "backbone": backbone,
                                      "seed": seed}, 84


def run_episodes(feats: dict[int, torch.Tensor], sampler: EpisodeSampler, n: int, classifier: str,
                 progress: bool = False) -> list[float]:
    predict = CLASSIFIER_REGISTRY.get(classifier)
    accs = []
    for i in tqdm(range(n), desc=f"episodes {sampler.spec.name}", disable=not progress, leave=False):
        ep = sampler.episode(i)
        s = torch.stack([feats[int(c)][int(j)] for c, j in ep.support])
        q = torch.stack([feats[int(c)][int(j)] for c, j in ep.query])
        pred = predict(s, torch.as_tensor(ep.support_labels), q, len(ep.classes))
        accs.append(100.0 * (pred == torch.as_tensor(ep.query_labels)).float().mean().item())
    return accs


LINEAR_HALVES = "linear_halves"


def linear_readout(feats: dict[int, torch.Tensor], seed: int = 0, epochs: int = 100) -> tuple[float, float]:
    """``linear_halves``: half of each class's images (fixed seed) train one linear layer on standardised
    features, the other half test it (ours: not the readout of any paper)."""
    from pretrain.engine.lr_schedules import build_lr_lambda
    from pretrain.evaluation.linear import train_linear_on_features

    g = torch.Generator().manual_seed(seed)
    xtr, ytr, xte, yte = [], [], [], []
    for j, c in enumerate(sorted(feats)):
        f = feats[c][torch.randperm(len(feats[c]), generator=g)]
        half = len(f) // 2
        xtr.append(f[:half]), xte.append(f[half:])
        ytr += [j] * half
        yte += [j] * (len(f) - half)
    xtr, xte = torch.cat(xtr), torch.cat(xte)
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6  # standardised features: one learning rate fits every backbone
    ytr, yte = torch.tensor(ytr), torch.tensor(yte)
    iters = max(1, len(xtr) // 256) * epochs
    _, acc = train_linear_on_features((xtr - mu) / sd, ytr, (xte - mu) / sd, yte, len(feats), epochs, 256, 0.1, 0.9,
                                      1e-4, build_lr_lambda("cosine", (), 0.0, iters), seed)
    p = acc["top1"] / 100.0
    return acc["top1"], 100.0 * 1.96 * math.sqrt(p * (1 - p) / len(yte))


def evaluate(args) -> tuple[pd.DataFrame, dict]:
    model, desc, default_size = load_model(args.checkpoint, args.backbone, args.seed, args.random_init,
                                           {k: getattr(args, k) for k in ("config", "arch", "prefix", "name")},
                                           args.opts)
    size = args.image_size or default_size
    device = resolve_device(args.device)
    cache = Path(args.cache_dir or Path(args.records) / ".feature_cache")
    rows = []
    for name in args.sources:
        source = Source(args.records, name, cache)
        t0 = time.perf_counter()
        feats = source_features(source, args.split, model, size, device, cache, progress=not args.quiet)
        t_feat = time.perf_counter() - t0
        t0 = time.perf_counter()
        dropped = 0
        if args.protocol == LINEAR_HALVES:
            mean, ci = linear_readout(feats, args.seed)
            n = 1
        else:
            sampler = EpisodeSampler(source.spec, args.split, args.protocol, args.seed)
            dropped = sampler.dropped
            if dropped and not args.quiet:
                print(f"[ring-meta-dataset] {name}: {dropped} of {len(source.spec.classes(args.split))} classes have "
                      f"fewer images than {args.protocol} needs per class; left out of its episodes")
            accs = run_episodes(feats, sampler, args.episodes, args.classifier, progress=not args.quiet)
            (mean, ci), n = mean_ci95(accs), len(accs)
        rows.append({"source": name, "accuracy": mean, "ci95": ci, "episodes": n,
                     "classes": len(source.spec.classes(args.split)), "classes_dropped": dropped, "encode_s": t_feat,
                     "episodes_per_s": n / max(time.perf_counter() - t0, 1e-9)})
    return pd.DataFrame(rows), {**desc, "image_size": size}


@cli_main("ring-meta-dataset")
def main(argv: list[str] | None = None) -> int:
    p = command_parser("ring-meta-dataset", __doc__, checkpoint=CHECKPOINT_HELP, optional_checkpoint=True,
                       output="output directory: summary.json and table.md")
    p.add_argument("--backbone", help="instead of a checkpoint: a torchvision/timm ResNet name, randomly "
                                      "initialised (a baseline)")
    p.add_argument("--random-init", action="store_true", help="with a checkpoint: its architecture, untrained "
                                                               "(seeded by its SEED): the paired baseline")
    add_weights_arguments(p)
    p.add_argument("--records", required=True, help="root holding one folder per source")
    p.add_argument("--sources", nargs="+", required=True)
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--episodes", type=int, default=600)
    p.add_argument("--protocol", default="variable", choices=[*PROTOCOLS, LINEAR_HALVES])
    p.add_argument("--classifier", default="ncc-cosine", choices=CLASSIFIER_REGISTRY.names())
    p.add_argument("--image-size", type=int, default=None, help="default: the checkpoint's DATA.IMAGE_SIZE")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--cache-dir", default=None, help="default: <records>/.feature_cache")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("opts", nargs="*", help="KEY VALUE overrides of the backbone's config, e.g. SEED 3 (the seed a "
                                           "--random-init twin is drawn with, and a weights file's row)")
    args = p.parse_intermixed_args(argv)
    if args.weights:
        args.checkpoint, _ = weights_source(args)
    if args.random_init and args.checkpoint is None:
        raise UserError("--random-init takes the architecture of a checkpoint: give a ring-pretrain run directory "
                        "or --weights FILE (or use --backbone NAME).")
    if (args.checkpoint is None) == (args.backbone is None):
        raise UserError("give either a checkpoint (a ring-pretrain run directory or --weights FILE) or --backbone "
                        f"NAME, not {'both' if args.checkpoint else 'neither'}.")
    df, desc = evaluate(args)
    what = f"{args.protocol}" + ("" if args.protocol == LINEAR_HALVES else f", {args.classifier}, {args.episodes} episodes")
    table = df[["source", "classes", "classes_dropped", "accuracy", "ci95"]].to_markdown(index=False, floatfmt=".2f")
    print(f"Meta-Dataset ({args.split} split, {what}); {row_name(desc)} {desc['backbone']} "
          f"at {desc['image_size']} px\n{table}")
    if args.output:
        metrics = {}
        for r in df.itertuples():
            metrics[f"{r.source}/accuracy"] = r.accuracy
            metrics[f"{r.source}/ci95"] = r.ci95
        extra = {k: desc[k] for k in ("name", "weights") if k in desc}
        write_summary(args.output, stage="meta_dataset", method=desc["method"], estimator=desc["estimator"],
                      backbone=desc["backbone"], dataset="meta_dataset", seed=desc["seed"], metrics=metrics, **extra,
                      episode_seed=args.seed,
                      protocol=args.protocol, classifier=args.classifier, episodes=args.episodes, split=args.split,
                      checkpoint=args.checkpoint, sources=df.to_dict(orient="records"), config=desc.get("config", {}))
        atomic_write_text(Path(args.output) / "table.md", table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
