"""The contrastive core: pools of candidate negatives, samplers that filter them, threshold schedules
for the ring, and the InfoNCE/CNCE estimator.  Nothing here knows the engine or which objective calls it."""
from .estimator import contrastive_loss
from .pools import MemoryBank, Queue
from .samplers import SAMPLERS, build_sampler, ring_bounds, ring_indices
from .schedules import SCHEDULES, build_schedule

__all__ = ["contrastive_loss", "MemoryBank", "Queue", "SAMPLERS", "build_sampler", "ring_bounds", "ring_indices",
           "SCHEDULES", "build_schedule"]
