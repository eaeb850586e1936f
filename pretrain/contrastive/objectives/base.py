"""What every objective shares: the temperature, the sampler and the ring's schedule."""
from __future__ import annotations

import torch
import torch.nn as nn

from ... import distributed as D
from ..samplers import _draw, build_sampler, ring_indices_chunked
from ..schedules import build_schedule


class ContrastiveObjective(nn.Module):
    views = 2

    @classmethod
    def build_backbone(cls, cfg) -> nn.Module:
        from ...backbones import build_backbone

        return build_backbone(cfg.MODEL.BACKBONE, cfg.MODEL.SMALL_STEM, width=cfg.MODEL.WIDTH)

    def __init__(self, cfg):
        super().__init__()
        self.temperature = float(cfg.OBJECTIVE.TEMPERATURE)
        self.estimator = cfg.OBJECTIVE.ESTIMATOR
        self.sampler = build_sampler(cfg.OBJECTIVE.ESTIMATOR, cfg.RING)
        self.schedule = build_schedule(cfg.RING)
        self.outer = self.schedule(0, 0.0)
        self.generator = torch.Generator().manual_seed(int(cfg.SEED) + 17)  # negative draws, shuffle-BN

    def set_progress(self, it: int, epoch: float) -> None:
        self.outer = self.schedule(it, epoch)

    def observe_loss(self, loss: float) -> None:
        self.schedule.observe(loss)

    def select_negatives(self, scores: torch.Tensor) -> torch.Tensor:
        """Similarities (B, N) to an in-memory pool -> those of the selected negatives (B, M), gradients kept."""
        idx = self.sampler(scores.detach(), self.outer)
        return scores if idx is None else scores.gather(1, idx)

    def draw_from_bank(self, z: torch.Tensor, bank: torch.Tensor, num_draws: int, score_block: int) -> torch.Tensor:
        """Indices (B, num_draws) of negatives drawn with replacement from a large bank (IR, CMC).

        Uniform draws never score the bank.  The ring scores it block by block of anchors (no gradient),
        so memory stays bounded for an ImageNet-sized bank (samplers.ring_indices_chunked)."""
        b = len(z)
        rows = (D.get_rank() * b, D.get_world_size() * b)
        with torch.no_grad():
            if not self.sampler.conditional:
                return _draw(len(bank), b, num_draws, z.device, self.generator, rows)
            return ring_indices_chunked(z.detach(), bank.to(z.dtype), self.outer, self.sampler.inner, score_block,
                                        num_draws=num_draws, generator=self.generator, rows=rows)

    def step_stats(self, neg: torch.Tensor) -> dict:
        stats = {"negatives": neg.shape[1]}
        if self.sampler.conditional:
            stats["outer"] = self.outer
        return stats

    def extra_state(self) -> dict:
        return {"schedule": self.schedule.state_dict(), "generator": self.generator.get_state(),
                "outer": self.outer}

    def load_extra_state(self, state: dict) -> None:
        self.schedule.load_state_dict(state["schedule"])
        self.generator.set_state(state["generator"])
        self.outer = float(state["outer"])
