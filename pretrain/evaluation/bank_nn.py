"""The authors' accuracy for the ``adaptive_acc`` ring schedule: the test split's 1-NN against a bank of the
training anchors, every epoch (``RING.ADAPTIVE_ACC_METRIC bank_1nn``).

Their code keeps a memory bank of every training image's latest L2-normalised projection (written as the
batches go by) and, after each epoch, labels each test image with its nearest bank entry's label (dot
product, the projection of the test image computed in eval mode); that fraction drives the schedule.  The
bank here is the same: the anchors of each step's first loss (``ContrastiveObjective.take_anchors``), at
the batch's dataset indices, kept by the objective so that checkpoints carry it (an exact resume).  The
alternative, ``knn``, is the kNN monitor's weighted 200-NN on backbone features every KNN.PERIOD_EPOCHS.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm import tqdm

from pretrain import distributed as D
from pretrain.data import build_dataset, loader_workers
from pretrain.data.transforms import eval_transform
from pretrain.data.views import TransformedDataset
from pretrain.engine.hooks import Hook
from pretrain.evaluation.features import extract_features


class Embedder(torch.nn.Module):
    """An objective's ``embed`` as a module (what ``extract_features`` runs, in eval mode)."""

    def __init__(self, objective):
        super().__init__()
        self.objective = objective

    def forward(self, x):
        return self.objective.embed(x)


def nearest_neighbour_top1(queries: torch.Tensor, query_labels: torch.Tensor, bank: torch.Tensor,
                           bank_labels: torch.Tensor, chunk: int = 1024) -> float:
    """% of queries whose highest-dot-product bank row carries their label."""
    hits = 0
    for s in range(0, len(queries), chunk):
        nearest = (queries[s:s + chunk] @ bank.t()).argmax(dim=1)
        hits += int((bank_labels[nearest] == query_labels[s:s + chunk]).sum())
    return 100.0 * hits / max(1, len(queries))


class BankNearestNeighbour(Hook):
    """Fills the objective's anchor bank every step and scores the test split against it every epoch; feeds
    the schedule (every rank gets rank 0's value) and logs ``bank_1nn_top1``."""

    def __init__(self, cfg, writer, train_targets, device):
        self.cfg, self.writer = cfg, writer
        self.labels = torch.as_tensor(train_targets, dtype=torch.long, device=device)
        self.device = device

    def before_train(self, trainer):
        obj = trainer.objective
        obj.record_anchors = True
        bank = getattr(obj, "anchor_bank", None)  # a resumed run's, from its checkpoint
        obj.anchor_bank = (torch.zeros(len(self.labels), self.cfg.MODEL.OUT_DIM, device=self.device) if bank is None
                           else bank.to(self.device))

    def after_step(self, trainer, stats):
        anchors, index = trainer.objective.take_anchors(), trainer.last_index
        if anchors is None:
            return
        rows = F.normalize(anchors[:len(index)].float(), dim=1)
        trainer.objective.anchor_bank[D.all_gather_cat(index)] = D.all_gather_cat(rows)

    def after_epoch(self, trainer):
        acc = self.score(trainer) if trainer.main else None
        D.barrier()
        acc = D.broadcast_float(acc)
        trainer.objective.observe(acc)
        trainer.log.write(iter=trainer.iter, epoch=trainer.epoch, bank_1nn_top1=acc)
        self.writer.scalars("eval", {"bank_1nn_top1": acc}, trainer.iter)
        if trainer.main:
            tqdm.write(f"[ring-pretrain] epoch {trainer.epoch}: 1-NN against the anchor bank {acc:.2f}% "
                       f"(drives adaptive_acc)")

    def score(self, trainer) -> float:
        cfg = self.cfg
        test = TransformedDataset(build_dataset(cfg.DATA, cfg.DATA.TEST_SPLIT, cfg.KNN.MAX_TEST),
                                  eval_transform(cfg.DATA.IMAGE_SIZE))
        q, y = extract_features(Embedder(trainer.objective), test, trainer.device,
                                num_workers=loader_workers(cfg.DATA.NUM_WORKERS, trainer.device))
        bank = trainer.objective.anchor_bank
        return nearest_neighbour_top1(q.to(bank.device), y.to(bank.device), bank, self.labels)
