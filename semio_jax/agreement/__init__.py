"""Agreement between exact analyses and sampling from the model: statistical tests, one module per concept.

Each check draws chains from the model, computes what the exact operator says
they should show, and returns an :class:`AgreementReport`: a family of tests
at a family-wise level with a Bonferroni correction, whose verdict is PASS,
FAIL or INCONCLUSIVE (the budget cannot support a valid test; see
:mod:`semio_jax.agreement.stats`).

  stats          CheckRow, AgreementReport and the common tests (t, binomial, chi-square)
  stationary     check_stationary: frequencies and transitions of chains started from pi
  basins         check_basins: absorption probabilities by a horizon
  entropy        check_entropy_rate: -1/n log P(path) vs the exact entropy rate
  evolution      check_evolution: token marginals P(Y_t = y)
  hitting        check_hitting: the law of a hitting time
  trajectories   check_trajectories: MAP/greedy strings and the path entropy
  mixing         check_tv: state laws at fixed times behind d(n)
  sensitivity    check_sensitivity: futures of a prompt and of a perturbation
  metastable     check_metastable: exit and passage times of metastable cores
"""

from __future__ import annotations

from .basins import absorption_by_horizon, check_basins, default_starts, draw_absorption_samples
from .entropy import check_entropy_rate
from .evolution import check_evolution
from .hitting import check_hitting
from .metastable import check_metastable
from .mixing import check_tv
from .sensitivity import check_sensitivity
from .stationary import check_stationary, draw_stationary_samples
from .stats import AgreementReport, CheckRow, combined_verdict
from .trajectories import check_trajectories

__all__ = ["CheckRow", "AgreementReport", "check_stationary", "draw_stationary_samples", "check_basins",
           "absorption_by_horizon", "default_starts", "draw_absorption_samples", "check_entropy_rate",
           "check_evolution", "check_hitting", "check_trajectories", "check_tv", "check_sensitivity",
           "check_metastable", "combined_verdict"]
