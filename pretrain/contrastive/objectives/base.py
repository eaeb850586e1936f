"""What every objective shares: the temperature, the sampler and the ring's schedule."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..samplers import build_sampler
from ..schedules import build_schedule


class ContrastiveObjective(nn.Module):
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

    def select_negatives(self, scores: torch.Tensor, num_draws: int | None = None) -> torch.Tensor:
        """Similarities (B, N) to the pool -> those of the sampled negatives (B, M), gradients kept."""
        gen = self.generator if scores.device.type == "cpu" else None
        idx = self.sampler(scores.detach(), self.outer, num_draws, gen)
        return scores if idx is None else scores.gather(1, idx)

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
