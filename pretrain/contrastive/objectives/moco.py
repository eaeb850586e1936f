"""MoCo v2: query encoder, EMA key encoder, a queue of keys; negatives = sampler(queue).

Shuffle-BN: a query and its positive key must not share BatchNorm statistics, or the network learns a
"batch signature" that tells the current batch's keys from the queue's older ones instead of learning
the images.  Under DDP the keys' batch is gathered from all ranks, permuted, and each rank encodes a
slice.  On one process the same is emulated with ``MOCO.BN_SPLITS`` sub-batches (MoCo's single-GPU
CIFAR practice): both encoders compute BatchNorm per sub-batch, the keys in a shuffled order, in one pass
of each encoder (``pretrain.modeling.split_batchnorm``: only the BatchNorm layers split the batch), or in one pass
per sub-batch where that runs faster (``MOCO.BN_PASSES``).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from pretrain import distributed as D
from pretrain.common import UserError, resolve_device
from pretrain.contrastive.objectives import OBJECTIVE_REGISTRY
from pretrain.contrastive.objectives.base import ContrastiveObjective, full_precision
from pretrain.contrastive.pools import Queue
from pretrain.modeling.backbones import build_encoder
from pretrain.modeling.split_batchnorm import split_batchnorm_

CPU_PASS_MIN = 32  # images per sub-batch from which a pass per sub-batch beats one pass on a CPU


def bn_passes(cfg, sub_batch: int) -> str:
    """MOCO.BN_PASSES resolved: "one" (SplitBatchNorm2d, one pass of the whole batch) or "per_split" (plain
    BatchNorm, one pass per sub-batch); the outputs are bit-identical and the gradients agree to rounding.
    ``auto``: one pass on a GPU; on a CPU per sub-batch from CPU_PASS_MIN images up (ResNet-18, 32 px,
    measured on 2 cores: one pass 1.29x faster at batch 64 with 8 splits, per sub-batch 1.04x at 128 and
    1.26x at 256: the smaller passes stay in cache; but the default suite, batch 64 in 4 sub-batches of 16,
    pretrained in 71-83 s per run with a pass per sub-batch against 54-65 s in one pass, one demo run each)."""
    mode = str(cfg.MOCO.BN_PASSES)
    if mode not in ("auto", "one", "per_split"):
        raise UserError(f"MOCO.BN_PASSES must be auto, one or per_split, got '{mode}'.")
    if mode != "auto":
        return mode
    on_cpu = resolve_device(cfg.DEVICE).type == "cpu"
    return "per_split" if on_cpu and sub_batch >= CPU_PASS_MIN else "one"


# QUEUE_SIZE K; MOMENTUM m of the key encoder; SHUFFLE_BN: BatchNorm over sub-batches (BN_SPLITS in one process,
# capped at batch/2; under DDP each rank is one); BN_PASSES: how the sub-batches run, with the same numbers either
# way: one | per_split | auto (one pass on a GPU; on a CPU a pass per sub-batch from CPU_PASS_MIN images up)
@OBJECTIVE_REGISTRY.register(name="moco", config={"MOCO": {"QUEUE_SIZE": 4096, "MOMENTUM": 0.999, "SHUFFLE_BN": True,
                                                           "BN_SPLITS": 8, "BN_PASSES": "auto"}})
class MoCo(ContrastiveObjective):
    def __init__(self, cfg, dataset_size: int, global_batch: int):
        super().__init__(cfg, dataset_size, global_batch)
        self.encoder_q = build_encoder(cfg.MODEL)
        self.encoder_k = copy.deepcopy(self.encoder_q)
        for p in self.encoder_k.parameters():
            p.requires_grad_(False)
        self.queue = Queue(cfg.MODEL.OUT_DIM, cfg.MOCO.QUEUE_SIZE, keys_per_step=global_batch)
        self.momentum = float(cfg.MOCO.MOMENTUM)
        self.shuffle_bn = bool(cfg.MOCO.SHUFFLE_BN)
        # each sub-batch needs >= 2 images for BatchNorm statistics: cap the splits at batch / 2
        local_batch = global_batch // max(1, D.get_world_size())
        self.bn_splits = max(1, min(int(cfg.MOCO.BN_SPLITS), local_batch // 2)) if self.shuffle_bn else 1
        # sub-batches in one pass when every BatchNorm can split; otherwise one encoder pass per sub-batch
        self.split_passes = 1
        one_pass = bn_passes(cfg, local_batch // self.bn_splits) == "one"  # checks MOCO.BN_PASSES in any case
        if self.bn_splits > 1 and not D.is_dist():  # under DDP each rank is one sub-batch
            if not (one_pass and split_batchnorm_(self.encoder_q, self.bn_splits)
                    and split_batchnorm_(self.encoder_k, self.bn_splits)):
                self.split_passes = self.bn_splits

    @property
    def backbone(self):
        return self.encoder_q.backbone

    @torch.no_grad()
    def _momentum_update(self) -> None:
        m = self.momentum
        for pk, pq in zip(self.encoder_k.parameters(), self.encoder_q.parameters()):
            pk.mul_(m).add_(pq.detach(), alpha=1.0 - m)

    def _encode(self, encoder, x: torch.Tensor) -> torch.Tensor:
        if self.split_passes <= 1:
            return encoder(x)
        return torch.cat([encoder(c) for c in x.chunk(self.split_passes)])

    @torch.no_grad()
    def _keys(self, im_k: torch.Tensor) -> torch.Tensor:
        if not self.shuffle_bn:
            return self.encoder_k(im_k)
        if not D.is_dist():
            perm = torch.randperm(len(im_k), generator=self.generator, device=self.generator.device).to(im_k.device)
            return self._encode(self.encoder_k, im_k[perm])[torch.argsort(perm)]
        gathered = D.all_gather_cat(im_k)
        # Same generator state on every rank -> the same permutation, no broadcast needed.
        perm = torch.randperm(len(gathered), generator=self.generator,
                              device=self.generator.device).to(gathered.device)
        n, r = len(im_k), D.get_rank()
        k = self.encoder_k(gathered[perm[r * n:(r + 1) * n]])
        k_all = D.all_gather_cat(k)
        unperm = torch.empty_like(perm)
        unperm[perm] = torch.arange(len(perm), device=perm.device)
        return k_all[unperm[r * n:(r + 1) * n]]

    def embed(self, x):
        return F.normalize(self.encoder_q(x).float(), dim=1)

    def forward(self, im_q, im_k, index=None):
        q = self._encode(self.encoder_q, im_q)
        with torch.no_grad():
            self._momentum_update()
            k = self._keys(im_k)
        # a snapshot: the queue is updated in place below, before backward
        keys = self.queue.candidates().detach().clone()
        with full_precision(q):
            q, k = q.float(), k.float()
            pos = (q * k).sum(dim=1)
            neg = self.negatives_from_scores(q, pos, q @ keys.float().t(), keys)
            loss = self.loss(neg)
        self.queue.enqueue(D.all_gather_cat(k.float()))
        return loss, self.step_stats(neg)
