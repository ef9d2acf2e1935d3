"""Exact analyses of an Operator, one module per concept (math in each module's docstring)."""

from .basins import BasinsResult, basins, basins_result, reachable_attractors, strict_basins
from .classes import ClassStructure, attractors, class_structure, periods, transient_states
from .greedy import GreedyDynamics, functional_graph, greedy_dynamics, greedy_map
from .stationary import StationaryResult, gth, stationary, stationary_result

__all__ = [
    "BasinsResult", "basins", "basins_result", "reachable_attractors", "strict_basins",
    "ClassStructure", "attractors", "class_structure", "periods", "transient_states",
    "GreedyDynamics", "functional_graph", "greedy_dynamics", "greedy_map",
    "StationaryResult", "gth", "stationary", "stationary_result",
]
