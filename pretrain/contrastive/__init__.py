"""The contrastive core: pools of candidate negatives, samplers that filter them, estimators (sampler + loss
form), threshold schedules for the ring, and the objectives.  Nothing here knows the engine."""
from .estimator import ESTIMATOR_REGISTRY, Estimator, Negatives, build_estimator, contrastive_loss, infonce
from .pools import MemoryBank, Queue
from .samplers import SAMPLER_REGISTRY, Candidates, Sampler, ring_bounds, ring_indices, uniform_draws
from .schedules import SCHEDULE_REGISTRY, build_schedule

__all__ = ["ESTIMATOR_REGISTRY", "Estimator", "Negatives", "build_estimator", "contrastive_loss", "infonce",
           "MemoryBank", "Queue", "SAMPLER_REGISTRY", "Candidates", "Sampler", "ring_bounds", "ring_indices",
           "uniform_draws", "SCHEDULE_REGISTRY", "build_schedule"]
