"""Monte Carlo from the model itself: rollouts and estimators with honest error bars."""

from .estimators import (
    AbsorptionSample,
    OccupationSample,
    ReplicaEstimate,
    batch_means_se,
    replica_mean,
    sample_absorption,
    sample_occupation,
    window_indices,
)
from .rollout import Sampler

__all__ = [
    "Sampler", "AbsorptionSample", "OccupationSample", "ReplicaEstimate", "batch_means_se",
    "replica_mean", "sample_absorption", "sample_occupation", "window_indices",
]
