"""Exact analyses of an Operator, one module per concept (math in each module's docstring)."""

from .basins import BasinsResult, basins, basins_result, reachable_attractors, strict_basins
from .classes import ClassStructure, attractors, class_structure, periods, transient_states
from .greedy import GreedyDynamics, functional_graph, greedy_dynamics, greedy_map
from .stationary import StationaryResult, gth, stationary, stationary_result
from .entropy import EntropyRateResult, PathEntropyResult, conditional_entropies, entropy_rate, path_entropy
from .evolution import evolve, ngram_marginals, string_distribution, token_marginals
from .hitting import (CommittorResult, HittingResult, committor, committor_result, hitting_times,
                      hitting_times_result)
from .trajectories import (DecoderComparison, Trajectory, beam_search, compare_decoders, greedy_trajectory,
                           map_trajectory, trajectory_probability)
from .bounds import Bound, DobrushinResult, certified_mixing_time, dobrushin, tv_bound
from .metastable import MetastableResult, metastable_sets
from .mixing import (ClassSpectrum, SpectralGapResult, limit_distribution, mixing_time, spectral_gap, tv_distance,
                     worst_case_tv)
from .sensitivity import SensitivityResult, future_tv, lyapunov_rate, prompt_sensitivity
from .sweeps import SweepResult, sweep, sweep_figure, temperature_limit
from .zero_temperature import ZeroTemperatureLimit, min_in_tree, zero_temperature_limit

__all__ = [
    "BasinsResult", "basins", "basins_result", "reachable_attractors", "strict_basins",
    "ClassStructure", "attractors", "class_structure", "periods", "transient_states",
    "GreedyDynamics", "functional_graph", "greedy_dynamics", "greedy_map",
    "StationaryResult", "gth", "stationary", "stationary_result",
]
__all__ += [
    "EntropyRateResult", "PathEntropyResult", "conditional_entropies", "entropy_rate", "path_entropy",
    "evolve", "ngram_marginals", "string_distribution", "token_marginals",
    "CommittorResult", "HittingResult", "committor", "committor_result", "hitting_times", "hitting_times_result",
    "DecoderComparison", "Trajectory", "beam_search", "compare_decoders", "greedy_trajectory", "map_trajectory",
    "trajectory_probability",
]
__all__ += [
    "Bound", "DobrushinResult", "certified_mixing_time", "dobrushin", "tv_bound",
    "MetastableResult", "metastable_sets",
    "ClassSpectrum", "SpectralGapResult", "limit_distribution", "mixing_time", "spectral_gap", "tv_distance",
    "worst_case_tv",
    "SensitivityResult", "future_tv", "lyapunov_rate", "prompt_sensitivity",
    "SweepResult", "sweep", "sweep_figure", "temperature_limit",
]
__all__ += ["ZeroTemperatureLimit", "min_in_tree", "zero_temperature_limit"]
