"""The contrastive core: pools (pools.py), negative samplers (samplers/), estimators (estimators/), the ring's
schedules (ring_schedules.py) and the objectives (objectives/).  It never imports the engine."""
from pretrain.contrastive.estimators import (ESTIMATOR_REGISTRY, Estimator, Negatives, build_estimator,
                                              contrastive_loss, infonce)
from pretrain.contrastive.pools import MemoryBank, Queue
from pretrain.contrastive.ring_schedules import RING_SCHEDULE_REGISTRY, build_schedule
from pretrain.contrastive.samplers import (SAMPLER_REGISTRY, Candidates, Sampler, ring_bounds, ring_indices,
                                           uniform_draws)

__all__ = ["ESTIMATOR_REGISTRY", "Estimator", "Negatives", "build_estimator", "contrastive_loss", "infonce",
           "MemoryBank", "Queue", "SAMPLER_REGISTRY", "Candidates", "Sampler", "ring_bounds", "ring_indices",
           "uniform_draws", "RING_SCHEDULE_REGISTRY", "build_schedule"]
