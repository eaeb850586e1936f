"""Linear evaluation of a frozen backbone: one training loop for every protocol, and ``run_lincls``.

The loop (``fit_linear``) trains a linear layer on (features, label) mini-batches that an epoch iterator
hands it; the protocols differ only in where those come from:
- cached features (``features.FeatureCache`` on disk or ``InMemoryFeatures``), shuffled by index per epoch;
- augmented images passed through the frozen encoder every epoch (``paper``, ``moco``).
The encoder is always frozen with BatchNorm in eval mode.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from tqdm import tqdm

from pretrain.common import resolve_device
from pretrain.config import provenance
from pretrain.data import build_dataset, labelled_split, loader_workers
from pretrain.data.views import TransformedDataset
from pretrain.engine.lr_schedules import build_lr_lambda
from pretrain.engine.seeding import seed_everything
from pretrain.evaluation.accuracy import topk_accuracy
from pretrain.evaluation.features import FeatureCache, InMemoryFeatures, extract_features
from pretrain.evaluation.pretrained import default_output, load_backbone
from pretrain.evaluation.protocols import Protocol, build_protocol
from pretrain.io import atomic_write_text, write_summary

Batches = Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]]


def fit_linear(clf: torch.nn.Linear, epoch_batches: Batches, epochs: int, lr: float, momentum: float,
               weight_decay: float, lr_lambda, device, progress: bool = False, after_epoch=None,
               history: list | None = None) -> torch.nn.Linear:
    """SGD on ``clf`` for ``epochs`` passes over ``epoch_batches()`` (features, labels), the LR stepped per
    iteration by ``lr_lambda``: the one linear-probe loop of the project.  ``after_epoch(epoch)``, when given,
    is called after each epoch (1-based); ``history``, when given, receives each epoch's mean training loss
    (summed on the device, read once per epoch)."""
    opt = torch.optim.SGD(clf.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
    for epoch in tqdm(range(epochs), desc="linear probe", disable=not progress, leave=False):
        total, steps = torch.zeros((), device=device), 0
        for x, y in epoch_batches():
            loss = F.cross_entropy(clf(x.to(device, non_blocking=True)), y.to(device, non_blocking=True))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.detach()
            steps += 1
        if history is not None:
            history.append(float(total) / max(steps, 1))
        if after_epoch is not None:
            after_epoch(epoch + 1)
    return clf


def linear_layer(dim: int, num_classes: int, init_std: float | None) -> torch.nn.Linear:
    """The probe: PyTorch's default initialisation, or weights N(0, init_std) with zero bias (MoCo's)."""
    clf = torch.nn.Linear(dim, num_classes)
    if init_std is not None:
        torch.nn.init.normal_(clf.weight, 0.0, init_std)
        torch.nn.init.zeros_(clf.bias)
    return clf


def iters_per_epoch(n: int, batch_size: int, drop_last: bool) -> int:
    """Optimizer steps in one epoch over n examples (the LR schedule's unit)."""
    return max(1, n // batch_size if drop_last else -(-n // batch_size))


def train_linear_probe(train, test, num_classes: int, epochs: int, batch_size: int, lr: float, momentum: float,
                       weight_decay: float, lr_lambda, seed: int, device="cpu", progress: bool = False,
                       history: list | None = None):
    """A linear classifier on frozen features (``InMemoryFeatures`` or ``FeatureCache``), trained on ``device``
    from mini-batches (full batches, a fresh permutation each epoch), then scored chunk by chunk: memory
    stays bounded by a batch.  ``history`` receives each epoch's mean training loss."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    clf = torch.nn.Linear(train.dim, num_classes).to(device)
    iters_per_epoch = max(1, len(train) // batch_size)

    def epoch_batches():
        perm = torch.randperm(len(train), generator=g)
        for b in range(iters_per_epoch):
            yield train.batch(perm[b * batch_size:(b + 1) * batch_size])

    fit_linear(clf, epoch_batches, epochs, lr, momentum, weight_decay, lr_lambda, device, progress, history=history)
    with torch.no_grad():  # top-k hits chunk by chunk: no (N_test x classes) score matrix in memory
        hits, n = {}, 0
        for x, y in test.chunks(8192):
            acc = topk_accuracy(clf(x.to(device)).float().cpu(), y)
            for k, v in acc.items():
                hits[k] = hits.get(k, 0.0) + v * len(y)
            n += len(y)
    return clf.cpu(), {k: v / n for k, v in hits.items()}


def train_linear_on_features(train_f, train_y, test_f, test_y, num_classes: int, epochs: int, batch_size: int,
                             lr: float, momentum: float, weight_decay: float, lr_lambda, seed: int,
                             progress: bool = False):
    """``train_linear_probe`` on tensors held in memory (exactly the linear probe without augmentation)."""
    return train_linear_probe(InMemoryFeatures(train_f, train_y), InMemoryFeatures(test_f, test_y), num_classes,
                              epochs, batch_size, lr, momentum, weight_decay, lr_lambda, seed, progress=progress)


def probe_through_encoder(bb, protocol: Protocol, cfg, train_set, test_set, num_classes: int, device,
                          lr_lambda, history: list | None = None) -> dict:
    """The linear layer trained on the protocol's training views passed through the frozen encoder every
    epoch (BatchNorm in eval mode, no gradient into the encoder), then scored on the test transform (the
    test features are fixed: computed once, at the first score).  With ``protocol.best_epoch`` the test split is scored after
    every epoch and the best epoch's top-1 is reported too (``top1_best``, ``best_epoch``)."""
    from torch.utils.data import DataLoader

    L = cfg.LINCLS
    loader = DataLoader(TransformedDataset(train_set, protocol.train_transform), batch_size=L.BATCH_SIZE,
                        shuffle=True, num_workers=loader_workers(cfg.DATA.NUM_WORKERS, device),
                        drop_last=protocol.drop_last,
                        generator=torch.Generator().manual_seed(cfg.SEED))
    clf = linear_layer(bb.feature_dim, num_classes, protocol.init_std).to(device)
    bb.eval()
    test = {}

    def score() -> dict:
        if not test:  # extracted at the first score: after training (or its first epoch), as it always was
            test["f"], test["y"] = extract_features(bb, TransformedDataset(test_set, protocol.test_transform),
                                                    device, num_workers=loader_workers(cfg.DATA.NUM_WORKERS, device))
        with torch.no_grad():
            return topk_accuracy(clf(test["f"].to(device)).cpu(), test["y"])

    def epoch_batches():
        for x, y in loader:
            with torch.no_grad():
                f = bb(x.to(device))
            yield f, y

    best = {"top1_best": -1.0, "best_epoch": 0}

    def after_epoch(epoch: int) -> None:
        top1 = score()["top1"]
        if top1 > best["top1_best"]:
            best.update(top1_best=top1, best_epoch=epoch)

    fit_linear(clf, epoch_batches, L.EPOCHS, protocol.lr, protocol.momentum, protocol.weight_decay, lr_lambda, device,
               after_epoch=after_epoch if protocol.best_epoch else None, history=history)
    return {**score(), **(best if protocol.best_epoch else {})}


def run_lincls(checkpoint: str | Path, out_dir: str | Path | None = None, opts: list[str] | None = None,
               random_init: bool = False, progress: bool = True, weights: dict | None = None) -> dict:
    """Linear evaluation of the backbone of a pretraining run or weights file (or its random-init twin) under
    the run's (the ``-c`` config's) LINCLS settings plus ``opts``; writes ``config.yaml`` and ``summary.json``
    under ``out_dir``.  ``weights``: ``load_backbone``'s keywords for a weights file (config, arch, prefix, name)."""
    cfg, bb = load_backbone(checkpoint, random_init, opts, **(weights or {}))
    seed_everything(cfg.SEED)
    device = resolve_device(cfg.DEVICE)
    bb.to(device).eval()
    for p in bb.parameters():
        p.requires_grad_(False)
    L = cfg.LINCLS
    protocol = build_protocol(cfg)
    train_set = build_dataset(cfg.DATA, labelled_split(cfg), L.MAX_TRAIN)
    test_set = build_dataset(cfg.DATA, cfg.DATA.TEST_SPLIT, L.MAX_TEST)
    iters = iters_per_epoch(len(train_set), L.BATCH_SIZE, protocol.drop_last or protocol.cached) * L.EPOCHS
    lr_lambda = build_lr_lambda(protocol.schedule, protocol.steps, 0.1, iters)
    src = Path(checkpoint)
    losses: list[float] = []  # the probe's mean training loss per epoch (summary.json: probe_loss)
    out = Path(out_dir) if out_dir else default_output(src, cfg, "lincls", random_init)
    if protocol.cached:
        # features on disk (float16, memory-mapped) and streamed to the probe: memory bounded at any N
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".features-", dir=out) as tmp:
            kw = dict(device=device, batch_size=256, num_workers=loader_workers(cfg.DATA.NUM_WORKERS, device),
                      progress=progress)
            ftr = FeatureCache.write(bb, TransformedDataset(train_set, protocol.train_transform),
                                     folder=Path(tmp) / "train", desc="train features", **kw)
            fte = FeatureCache.write(bb, TransformedDataset(test_set, protocol.test_transform),
                                     folder=Path(tmp) / "test", desc="test features", **kw)
            n_cls = int(max(ftr.labels.max(), fte.labels.max())) + 1
            _, acc = train_linear_probe(ftr, fte, n_cls, L.EPOCHS, L.BATCH_SIZE, protocol.lr, protocol.momentum,
                                        protocol.weight_decay, lr_lambda, cfg.SEED, device=device, progress=progress,
                                        history=losses)
            del ftr, fte  # close the memory maps before the folder goes
    else:
        n_cls = int(max(getattr(train_set, "targets", [0]))) + 1
        acc = probe_through_encoder(bb, protocol, cfg, train_set, test_set, n_cls, device, lr_lambda, history=losses)
    atomic_write_text(out / "config.yaml", cfg.dump())
    return write_summary(out, stage="lincls", **provenance(cfg, random_init), metrics=acc, checkpoint=str(src),
                         protocol=protocol.name, probe_loss=losses)
