"""The weighted kNN classifier on frozen features (Wu et al. 2018) and the pretraining hook that monitors it."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm import tqdm

from pretrain import distributed as D
from pretrain.common import UserError
from pretrain.data import build_dataset, labelled_split, loader_workers
from pretrain.data.transforms import eval_transform
from pretrain.data.views import TransformedDataset
from pretrain.engine.hooks import Hook
from pretrain.evaluation.accuracy import topk_accuracy
from pretrain.evaluation.features import extract_features


@torch.no_grad()
def knn_predict(train_f: torch.Tensor, train_y: torch.Tensor, test_f: torch.Tensor, num_classes: int,
                k: int = 200, temperature: float = 0.07, chunk: int = 1024) -> torch.Tensor:
    """Weighted kNN (Wu et al. 2018): each of the k nearest training features (cosine) votes for its
    class with weight exp(similarity / temperature).  Returns (N_test, num_classes) class scores."""
    train_f, test_f = F.normalize(train_f, dim=1), F.normalize(test_f, dim=1)
    k = min(k, len(train_f))
    out = []
    for s in range(0, len(test_f), chunk):
        sim = test_f[s:s + chunk] @ train_f.t()
        top_sim, top_idx = sim.topk(k, dim=1)
        votes = torch.zeros(len(sim), num_classes, dtype=sim.dtype)
        votes.scatter_add_(1, train_y[top_idx], (top_sim / temperature).exp())
        out.append(votes)
    return torch.cat(out)


def knn_top1(backbone: torch.nn.Module, cfg, device) -> float:
    """Weighted kNN top-1 (%) of the test split against the training split's features (KNN.* settings)."""
    tf = eval_transform(cfg.DATA.IMAGE_SIZE)
    train = TransformedDataset(build_dataset(cfg.DATA, labelled_split(cfg), cfg.KNN.MAX_TRAIN), tf)
    test = TransformedDataset(build_dataset(cfg.DATA, cfg.DATA.TEST_SPLIT, cfg.KNN.MAX_TEST), tf)
    workers = loader_workers(cfg.DATA.NUM_WORKERS, device)
    ftr, ytr = extract_features(backbone, train, device, num_workers=workers)
    fte, yte = extract_features(backbone, test, device, num_workers=workers)
    n_cls = int(max(ytr.max(), yte.max())) + 1
    scores = knn_predict(ftr, ytr, fte, n_cls, cfg.KNN.K, cfg.KNN.TEMPERATURE)
    return topk_accuracy(scores, yte, ks=(1,))["top1"]


def check_knn_splits(cfg) -> None:
    """Both splits the monitor reads exist, checked before training (not after the first epoch's work)."""
    for split in (labelled_split(cfg), cfg.DATA.TEST_SPLIT):
        try:
            build_dataset(cfg.DATA, split, 1)
        except UserError as e:
            raise type(e)(f"{str(e).rstrip('.')}; the kNN monitor scores the '{split}' split every "
                          "KNN.PERIOD_EPOCHS epochs: add it, point DATA.TEST_SPLIT at one you have, or set KNN.ENABLED "
                          "False.") from None


class KNNMonitor(Hook):
    """Weighted kNN top-1 of the test split every KNN.PERIOD_EPOCHS epochs and after the last one (rank 0
    computes it; with ``feeds_schedule`` the ring's schedule adapts to it, rank 0's value on every rank)."""

    def __init__(self, cfg, writer, feeds_schedule: bool = False):
        self.cfg, self.writer, self.feeds_schedule = cfg, writer, feeds_schedule
        self.every, self.epochs = cfg.KNN.PERIOD_EPOCHS, cfg.SOLVER.EPOCHS
        check_knn_splits(cfg)

    def after_epoch(self, trainer):
        if trainer.epoch % self.every and trainer.epoch != self.epochs:
            return
        acc = knn_top1(trainer.objective.backbone, self.cfg, trainer.device) if trainer.main else None
        D.barrier()
        trainer.last_knn = acc
        if self.feeds_schedule:  # every rank adapts to rank 0's accuracy
            trainer.objective.observe(D.broadcast_float(trainer.last_knn))
        trainer.log.write(iter=trainer.iter, epoch=trainer.epoch, knn_top1=trainer.last_knn)
        self.writer.scalars("eval", {"knn_top1": trainer.last_knn}, trainer.iter)
        if trainer.main:
            tqdm.write(f"[ring-pretrain] epoch {trainer.epoch}: kNN top-1 {trainer.last_knn:.2f}%")
