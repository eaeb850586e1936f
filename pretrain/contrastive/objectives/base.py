"""What every objective shares: the temperature, the estimator (sampler + loss form) and the ring's schedule.

Mixed precision: encoders may run under autocast (bf16), but similarities, the ring's ranking, bank and
queue scores and the logits are computed in fp32 (``full_precision``), as the authors did: in bf16 a
65,536-entry queue keeps only ~2.5k distinct scores per row and the ring's members move.

Objectives hand their pool to the estimator in one of two ways, and the sampler behind it serves both:
- ``negatives_from_scores``: an in-memory pool (queue, batch) whose score matrix the objective computed;
- ``negatives_from_bank``: a memory bank scored block by block of anchors (``draw_from_bank``),
  ``BANK.NUM_NEGATIVES`` negatives drawn per anchor.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from pretrain import distributed as D
from pretrain.contrastive.estimators import build_estimator
from pretrain.contrastive.estimators.base import Negatives
from pretrain.contrastive.pools import MemoryBank
from pretrain.contrastive.ring_schedules import build_schedule
from pretrain.contrastive.samplers import Candidates

# The memory bank's settings, shared by the bank objectives (IR, CMC) and declared by both where they register:
# MOMENTUM m: M[i] <- normalize(m * M[i] + (1 - m) * z), 0 in the paper's code, 0.5 in the original IR;
# NUM_NEGATIVES: k - 1 negatives drawn per anchor (4096 logits with the positive); SCORE_BLOCK: scores held at
# once by the ring over a bank (2^25 fp32 = 128 MiB), which bounds memory.
BANK_CONFIG = {"BANK": {"MOMENTUM": 0.0, "NUM_NEGATIVES": 4095, "SCORE_BLOCK": 2 ** 25}}


def full_precision(like: torch.Tensor):
    """A region where autocast is off on ``like``'s device: what runs inside computes in the inputs' dtype,
    so pass fp32 tensors (``.float()``)."""
    return torch.autocast(like.device.type, enabled=False)


class ContrastiveObjective(nn.Module):
    views = 2
    input_streams = "rgb"  # what the backbone reads (a random-init baseline matches it): rgb, or CMC's lab

    @classmethod
    def build_backbone(cls, cfg) -> nn.Module:
        from pretrain.modeling.backbones import build_backbone

        return build_backbone(cfg.MODEL.BACKBONE, cfg.MODEL.SMALL_STEM, width=cfg.MODEL.WIDTH)

    def __init__(self, cfg, dataset_size: int, global_batch: int):
        super().__init__()
        self.estimator = build_estimator(cfg)
        # the loss form's own temperature where it has one (DCL.TEMPERATURE, ...), else the objective's
        self.temperature = self.estimator.temperature or float(cfg.OBJECTIVE.TEMPERATURE)
        if self.temperature != cfg.OBJECTIVE.TEMPERATURE and D.is_main():
            print(f"[ring-pretrain] {self.estimator.name}: temperature {self.temperature:g}, its own setting (its "
                  f"section's TEMPERATURE; 0 there uses OBJECTIVE.TEMPERATURE {cfg.OBJECTIVE.TEMPERATURE:g})")
        # optimizer steps per epoch, as the engine's sampler counts them (full batches only)
        self.schedule = build_schedule(cfg.RING, max(1, dataset_size // global_batch))
        self.outer = self.schedule(0)
        self._generator_seed = int(cfg.SEED) + 17
        self.generator = torch.Generator().manual_seed(self._generator_seed)  # negative draws, shuffle-BN, mixes
        # memory-bank objectives (IR, CMC): negatives per anchor, and the bound on scores held at once
        self.num_negatives, self.score_block = int(cfg.BANK.NUM_NEGATIVES), int(cfg.BANK.SCORE_BLOCK)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The L2-normalised projections of images, as the anchors are (the authors' 1-NN monitor compares the
        test split's against a bank of the training anchors'): the query encoder's."""
        return F.normalize(self.encoder(x).float(), dim=1)

    def take_anchors(self) -> torch.Tensor | None:
        """The anchors of the last step's first loss (B rows of this rank, detached; SimCLR's view-1 half is
        its first B), once; None when not recorded (``record_anchors`` off)."""
        anchors, self._anchors = getattr(self, "_anchors", None), None
        return anchors

    @property
    def sampler(self):
        """The estimator's sampler (which negatives)."""
        return self.estimator.sampler

    def place_state(self, device: torch.device) -> None:
        """Moves the draws and the schedule's state to the training device (a CUDA generator there: no
        host-to-device copy per step).  Called once before training; the CPU keeps its CPU generator, so
        CPU numbers do not change."""
        if torch.device(device).type != self.generator.device.type:
            self.generator = torch.Generator(device=device).manual_seed(self._generator_seed)
        self.schedule.place(device)

    def set_progress(self, step: int) -> None:
        """Before optimizer step ``step`` (0-based): the ring's outer fraction for it (a float, or a 0-dim
        device tensor for a schedule that adapts to the loss)."""
        self.outer = self.schedule(step)

    def observe(self, metric) -> None:
        """Feeds the schedule what it adapts to (``schedule.observes``: the loss as a device tensor, or the
        kNN accuracy)."""
        self.schedule.observe(metric)

    def negatives_from_scores(self, anchors: torch.Tensor, pos: torch.Tensor, scores: torch.Tensor,
                              pool: torch.Tensor, pool_rows: torch.Tensor | None = None) -> Negatives:
        """Scores (B, N) of the anchors against an in-memory pool -> the selected negatives, gradients kept.

        ``pool`` holds the candidates' embeddings; ``pool_rows`` (B, N), when given, maps each score column
        to its row of ``pool`` (SimCLR's candidates leave out the anchor and its positive)."""
        idx = self.sampler.select(Candidates.from_scores(scores.detach()), self.outer)
        if idx is not None and idx.dtype == torch.bool:  # a ring sized on the device: every column, masked
            return Negatives(anchors, pos, scores, pool, pool_rows, valid=idx)
        logits = scores if idx is None else scores.gather(1, idx)
        if pool_rows is None:
            return Negatives(anchors, pos, logits, pool, idx)
        return Negatives(anchors, pos, logits, pool, pool_rows if idx is None else pool_rows.gather(1, idx))

    def draw_from_bank(self, z: torch.Tensor, bank: torch.Tensor, num_draws: int, score_block: int) -> torch.Tensor:
        """Indices (B, num_draws) of negatives drawn with replacement from a large bank (IR, CMC).

        A uniform sampler never scores the bank; the ring scores it block by block of anchors (no
        gradient), so memory stays bounded for an ImageNet-sized bank."""
        b = len(z)
        rows = (D.get_rank() * b, D.get_world_size() * b)
        with torch.no_grad(), full_precision(z):
            cands = Candidates.from_bank(z.detach().float(), bank.float(), score_block)
            return self.sampler.select(cands, self.outer, num_draws, self.generator, rows)

    def negatives_from_bank(self, anchors: torch.Tensor, bank: MemoryBank, index: torch.Tensor) -> Negatives:
        """IR/CMC: the positive is the bank entry of the anchor's own image; ``BANK.NUM_NEGATIVES`` negatives
        are drawn from the bank by the sampler.  Gradients flow into the anchors only."""
        entries = bank.candidates()
        with full_precision(anchors):
            anchors = anchors.float()
            pos = (anchors * bank.get(index).float()).sum(dim=1)
            idx = self.draw_from_bank(anchors, entries, self.num_negatives, self.score_block)
            logits = torch.bmm(entries[idx].float(), anchors.unsqueeze(2)).squeeze(2)
        return Negatives(anchors, pos, logits, entries, idx)

    def loss(self, negatives: Negatives) -> torch.Tensor:
        if getattr(self, "record_anchors", False) and getattr(self, "_anchors", None) is None:
            self._anchors = negatives.anchors.detach()
        negatives.generator = self.generator
        return self.estimator.loss(negatives, self.temperature)

    def step_stats(self, negatives: Negatives) -> dict:
        """Negatives per anchor (their mean, a device tensor, for a ring sized on the device), the ring's o and
        what the loss form reported (``Negatives.stats``): values the engine reads only at log steps."""
        count = negatives.count()
        stats = {"negatives": count if isinstance(count, int) else count.float().mean(), **negatives.stats}
        if self.sampler.conditional:
            stats["outer"] = self.outer
        return stats

    def extra_state(self) -> dict:
        bank = getattr(self, "anchor_bank", None)  # the 1-NN monitor's (evaluation/bank_nn.py), when it runs
        return {"schedule": self.schedule.state_dict(), "generator": self.generator.get_state(),
                "outer": float(self.outer), **({"anchor_bank": bank.cpu()} if bank is not None else {})}

    def load_extra_state(self, state: dict) -> None:
        self.schedule.load_state_dict(state["schedule"])
        self.generator.set_state(state["generator"])
        self.outer = float(state["outer"])
        if "anchor_bank" in state:
            self.anchor_bank = state["anchor_bank"]
