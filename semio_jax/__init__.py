"""semio_jax: exact dynamical-systems analysis of autoregressive language models.

The data flow, one layer per stage (imports only go down this list):

    errors, _util      named errors; atomic files, memory budget, progress bars, meshes
    core               StateSpace, sampling procedures, the model protocol, the Operator type
    build              model -> logits for every state -> procedure -> Operator (build_operator)
    linalg             GTH, M-matrix certificates, Krylov solvers, sharded kernels
    analysis           one concept per module: classes, stationary laws, basins, mixing, ...
    montecarlo         rollouts from the model itself and their estimators
    agreement          exact vs sampled: statistical tests per concept
    app                pipeline, toolkit, reports, figures, export, interop, CLI

Importing semio_jax enables JAX's float64 support (``jax_enable_x64``): the
analyses are exact in float64 with respect to the model's own logits. Models
keep computing in float32; only the procedure and everything after it is float64.
"""

import jax as _jax

_jax.config.update("jax_enable_x64", True)

from . import sampling  # noqa: E402
from .analysis import (  # noqa: E402
    attractors,
    basins,
    basins_result,
    class_structure,
    greedy_dynamics,
    periods,
    stationary,
    stationary_result,
    strict_basins,
    transient_states,
)
from .analysis import (  # noqa: E402
    beam_search,
    committor,
    compare_decoders,
    entropy_rate,
    evolve,
    greedy_trajectory,
    hitting_times,
    map_trajectory,
    ngram_marginals,
    path_entropy,
    string_distribution,
    token_marginals,
    trajectory_probability,
)
from .analysis import (  # noqa: E402
    certified_mixing_time,
    dobrushin,
    limit_distribution,
    metastable_sets,
    mixing_time,
    prompt_sensitivity,
    spectral_gap,
    sweep,
    temperature_limit,
    tv_bound,
    tv_distance,
    worst_case_tv,
)
from .analysis import ZeroTemperatureLimit, zero_temperature_limit  # noqa: E402
from .errors import *  # noqa: E402,F401,F403
from .errors import __all__ as _errors_all  # noqa: E402
from .core.model import FunctionModel, NGramModel, as_model  # noqa: E402
from ._util.memory import estimate_memory  # noqa: E402
from .build import build_operator  # noqa: E402
from .core.operator import Operator  # noqa: E402
from .core.space import StateSpace  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "StateSpace", "Operator", "build_operator", "estimate_memory", "sampling",
    "FunctionModel", "NGramModel", "as_model",
    "attractors", "transient_states", "periods", "class_structure",
    "stationary", "stationary_result", "basins", "basins_result", "strict_basins",
    "greedy_dynamics",
    *_errors_all,
]
__all__ += [
    "entropy_rate", "path_entropy", "evolve", "token_marginals", "ngram_marginals", "string_distribution",
    "hitting_times", "committor", "trajectory_probability", "map_trajectory", "greedy_trajectory",
    "beam_search", "compare_decoders",
]
__all__ += [
    "spectral_gap", "tv_distance", "worst_case_tv", "mixing_time", "limit_distribution", "metastable_sets", "prompt_sensitivity",
    "sweep", "temperature_limit", "dobrushin", "tv_bound", "certified_mixing_time",
]
__all__ += ["zero_temperature_limit", "ZeroTemperatureLimit"]
