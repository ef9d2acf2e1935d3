"""Hitting times and committors: expected steps to a target set, and which of two sets comes first.

**Hitting time.** For a target set T let tau_T = min{t >= 0 : X_t in T}
(so tau_T = 0 on T; +inf if T is never entered). The expected hitting time
k(s) = E_s[tau_T] satisfies

    k = 0 on T,   k(s) = 1 + sum_y q(y|s) k(succ(s, y))  elsewhere,

and is finite iff T is entered with probability 1. That is decided
**combinatorially** (only zero/non-zero probabilities matter), with T made
absorbing: let R be the states that can reach T; k(s) = +inf iff s can reach
a state outside R without passing through T (a positive-probability path to a
state from which T is unreachable). On the remaining non-target states U the
system (I - Q_UU) k_U = 1 is solved by sparse LU with two steps of iterative
refinement (above 8192 unknowns by BiCGSTAB/GMRES with structured pulls and the greedy
preconditioner of :mod:`semio_jax.linalg.krylov`, as LU's fill-in explodes
there); from U the chain only moves inside U or into T, and every state of
U reaches T, so I - Q_UU is a non-singular M-matrix.

**Committor.** For disjoint sets A and B, c(s) = P_s(tau_B < tau_A) (the
probability of hitting B before A; c = 0 on A, 1 on B, and c = Pc elsewhere).
Combinatorially exact parts (with A and B absorbing): c(s) = 0 where B is
unreachable; c(s) = 1 where A is unreachable and no path leads to a state
that can reach neither A nor B (so A u B is entered with probability 1, and
it is B). The other states U each reach B, so again I - Q_UU is non-singular
and (I - Q_UU) c_U = P_{U, not U} c_{not U} is solved by sparse LU. With A
empty, c(s) is the probability of ever hitting B.

**Certificate** (as in :mod:`semio_jax.analysis.basins`). With r the
residual of the solve in the infinity norm and t = (I - Q_UU)^{-1} 1 (the
expected number of steps spent in U; for hitting times t = k itself),
||x_hat - x||_inf <= ||(I - Q_UU)^{-1}||_inf r = max(t) r. ``error_bound``
reports max(t_hat) r / (1 - r) (which also covers the error in t_hat itself;
None if r >= 1).

Slow references (dense transitive closure and ``numpy.linalg.solve``):
:func:`hitting_times_reference`, :func:`committor_reference`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.sparse import csgraph

from ..errors import ConvergenceError, UnrepresentableWarning
from ..linalg import krylov
from ..linalg.mmatrix import killed_generator
from ._cache import cached_analysis

#: above this many unknown states the solves use BiCGSTAB/GMRES instead of sparse LU
KRYLOV_MIN = 8192

__all__ = ["HittingResult", "CommittorResult", "state_set", "hitting_times", "hitting_times_result",
           "committor", "committor_result"]


def state_set(op, states) -> np.ndarray:
    """bool[S] mask from a boolean mask [S] or an array of state indices."""
    s = op.num_states
    arr = np.asarray(states)
    if arr.dtype == bool:
        if arr.shape != (s,):
            raise ValueError(f"a boolean state mask must have shape ({s},), got {arr.shape}")
        return arr.copy()
    arr = arr.astype(np.int64).ravel() if arr.size else np.zeros(0, np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= s):
        raise IndexError(f"state indices must lie in [0, {s}), got {int(arr.min())}..{int(arr.max())}")
    mask = np.zeros(s, dtype=bool)
    mask[arr] = True
    return mask


def _reaches(op, sources: np.ndarray, absorbing: np.ndarray) -> np.ndarray:
    """bool[S]: states with a positive-probability path into ``sources``, never leaving an absorbing state.

    Sources are included. One breadth-first search on the reversed support
    graph from a virtual root joined to every source (edges out of absorbing
    states are dropped).
    """
    s = op.num_states
    if not sources.any():
        return np.zeros(s, dtype=bool)
    adj = op.adjacency()
    adj = (sp.diags((~absorbing).astype(np.float64)) @ adj).tocsr()  # drop rows of absorbing states
    rev = adj.T.tocsr()
    root = sp.csr_matrix((np.ones(int(sources.sum())), (np.zeros(int(sources.sum()), np.int64),
                                                         np.flatnonzero(sources))), shape=(1, s))
    ext = sp.bmat([[rev, sp.csr_matrix((s, 1))], [root, sp.csr_matrix((1, 1))]], format="csr")
    order = csgraph.breadth_first_order(ext, s, directed=True, return_predecessors=False)
    out = np.zeros(s + 1, dtype=bool)
    out[order] = True
    return out[:s]


def _solve(op, unknown: np.ndarray, rhs: np.ndarray, times_rhs: bool = False):
    """Solve (I - Q_UU) x = rhs on the index set ``unknown`` by sparse LU with refinement.

    Returns (x, residual_inf, max expected time in U, error bound).
    """
    x, residual, tmax, bound = (_solve_krylov if unknown.size > KRYLOV_MIN else _solve_lu)(op, unknown, rhs, times_rhs)
    if not (np.all(np.isfinite(x)) and np.isfinite(tmax)):
        raise ConvergenceError(
            f"the linear solve on {unknown.size} states returned non-finite values: the expected times exceed the "
            f"float64 range (moves far below 1e-308 govern them); use a higher temperature")
    if op.tiny_moves(unknown):
        warnings.warn(f"moves out of the {unknown.size} solved states have probabilities below the float64 range: "
                      f"the solve treats them as 0 and its result is not certified", UnrepresentableWarning,
                      stacklevel=3)
        bound = None
    return x, residual, tmax, bound


def _solve_lu(op, unknown: np.ndarray, rhs: np.ndarray, times_rhs: bool = False):
    """(I - Q_UU) x = rhs by sparse LU with two refinement steps."""

    a_mat = killed_generator(op.rows(unknown), unknown)  # I - Q_UU from the unknown states' rows alone
    try:
        lu = spla.splu(a_mat, permc_spec="COLAMD")
    except RuntimeError as e:  # "Factor is exactly singular": moves below the float64 range decide the times
        raise ConvergenceError(
            f"sparse LU of I - Q on {unknown.size} states failed ({e}): the expected times are governed by moves "
            f"too small for float64; use semio_jax.zero_temperature_limit(op).log_escape_times(op) for escapes, "
            f"or a higher temperature") from None
    x = lu.solve(rhs)
    for _ in range(2):
        x = x + lu.solve(rhs - a_mat @ x)
    residual = float(np.max(np.abs(a_mat @ x - rhs)))
    times = x if times_rhs else lu.solve(np.ones(unknown.size))
    tmax = float(np.max(times))
    bound = tmax * residual / (1.0 - residual) if residual < 1.0 else None
    return x, residual, tmax, bound


def _solve_krylov(op, unknown: np.ndarray, rhs: np.ndarray, times_rhs: bool):
    """As _solve, by BiCGSTAB/GMRES with structured pulls (semio_jax.linalg.krylov)."""

    kern = krylov.ChainKernels(op)
    u = np.zeros(op.num_states, dtype=bool)
    u[unknown] = True
    b = np.zeros(op.num_states)
    b[unknown] = rhs
    factor = kern.greedy_factor(u)
    x_full, _, _ = krylov.column_solve(kern, u, b, factor=factor)
    residual = float(np.max(np.abs(kern.shifted_pull(x_full) - b)[unknown]))  # (I - Q) x - b on U
    times = x_full if times_rhs else krylov.column_solve(kern, u, np.where(u, 1.0, 0.0), factor=factor)[0]
    tmax = float(np.max(times[unknown]))
    bound = tmax * residual / (1.0 - residual) if residual < 1.0 else None
    return x_full[unknown], residual, tmax, bound


@dataclass
class HittingResult:
    """Expected hitting times of a target set.

    Attributes:
      times: float64[S]; E_s[tau_T] (0 on T, +inf where T is not entered with probability 1).
      target: sorted int64 array, the target states.
      finite: bool[S]; T is entered with probability 1 (decided combinatorially).
      n_solved: number of states whose time needed the linear solve.
      residual: ||(I - Q) k_hat - 1||_inf (0.0 if no solve).
      error_bound: bound on max |k_hat - k| over the solved states (0.0 if no solve; None if not certified).
    """

    times: np.ndarray
    target: np.ndarray
    finite: np.ndarray
    n_solved: int
    residual: float
    error_bound: float | None

    def summary(self) -> dict:
        fin = self.times[np.isfinite(self.times)]
        return {"n_target": int(self.target.size), "n_infinite": int((~self.finite).sum()),
                "n_solved": self.n_solved, "max_finite_time": float(fin.max()) if fin.size else None,
                "residual_inf": self.residual, "error_bound_inf": self.error_bound}


def hitting_times_result(op, target) -> HittingResult:
    """Expected steps to enter ``target`` (indices or bool mask) from every state, with diagnostics."""
    mask = state_set(op, target)
    if not mask.any():
        raise ValueError("the target set is empty")
    return _hitting_cached(op, target=np.flatnonzero(mask).tobytes())


@cached_analysis("hitting_times")
def _hitting_cached(op, target: bytes) -> HittingResult:
    tgt = np.frombuffer(target, dtype=np.int64)
    mask = np.zeros(op.num_states, dtype=bool)
    mask[tgt] = True
    can_reach = _reaches(op, mask, absorbing=mask)
    infinite = _reaches(op, ~can_reach, absorbing=mask) & ~mask
    times = np.zeros(op.num_states)
    times[infinite] = np.inf
    unknown = np.flatnonzero(~mask & ~infinite)
    residual, bound = 0.0, 0.0
    if unknown.size:
        x, residual, _, bound = _solve(op, unknown, np.ones(unknown.size), times_rhs=True)
        times[unknown] = np.maximum(x, 1.0)  # at least one step outside T
    times.setflags(write=False)
    return HittingResult(times=times, target=tgt.copy(), finite=~infinite, n_solved=int(unknown.size),
                         residual=residual, error_bound=bound)


def hitting_times(op, target) -> np.ndarray:
    """float64[S]: E_s[min{t >= 0: X_t in target}] (+inf where the target is missed with positive probability)."""
    return hitting_times_result(op, target).times


@dataclass
class CommittorResult:
    """Probability of hitting B before A.

    Attributes:
      probabilities: float64[S]; c(s) = P_s(tau_B < tau_A).
      zero, one: bool[S]; where c is exactly 0 / 1 (combinatorial).
      n_solved: number of states solved for.
      residual: residual of the solve in the infinity norm.
      max_time: max expected steps spent among the solved states (None if no solve).
      error_bound: bound on the entrywise error (0.0 if exact; None if not certified).
    """

    probabilities: np.ndarray
    zero: np.ndarray
    one: np.ndarray
    n_solved: int
    residual: float
    max_time: float | None
    error_bound: float | None

    def summary(self) -> dict:
        return {"n_zero": int(self.zero.sum()), "n_one": int(self.one.sum()), "n_solved": self.n_solved,
                "residual_inf": self.residual, "max_time": self.max_time, "error_bound_inf": self.error_bound}


def committor_result(op, A, B) -> CommittorResult:
    """P_s(hit B before A) from every state, with diagnostics (A and B disjoint; A may be empty)."""
    a = state_set(op, A)
    b = state_set(op, B)
    if (a & b).any():
        raise ValueError(f"A and B must be disjoint; they share states {np.flatnonzero(a & b)[:5].tolist()}")
    return _committor_cached(op, a=np.flatnonzero(a).tobytes(), b=np.flatnonzero(b).tobytes())


@cached_analysis("committor")
def _committor_cached(op, a: bytes, b: bytes) -> CommittorResult:
    s = op.num_states
    am = np.zeros(s, dtype=bool)
    bm = np.zeros(s, dtype=bool)
    am[np.frombuffer(a, dtype=np.int64)] = True
    bm[np.frombuffer(b, dtype=np.int64)] = True
    boundary = am | bm
    reach_b = _reaches(op, bm, absorbing=boundary)
    reach_a = _reaches(op, am, absorbing=boundary)
    nowhere = ~_reaches(op, boundary, absorbing=boundary)
    may_stall = _reaches(op, nowhere, absorbing=boundary)
    zero = ~reach_b  # includes A (and B only if B is empty)
    one = bm | (~boundary & reach_b & ~reach_a & ~may_stall)
    c = np.where(one, 1.0, 0.0)
    unknown = np.flatnonzero(~zero & ~one)
    residual, tmax, bound = 0.0, None, 0.0
    if unknown.size:
        if unknown.size > KRYLOV_MIN:  # P_{U, not U} c by a structured pull (c is 0 on U)
            rhs = krylov.ChainKernels(op).pull_off(np.where(zero | one, c, 0.0))[unknown]
        else:
            known = np.flatnonzero(zero | one)
            rhs = op.rows(unknown)[:, known] @ c[known]
        x, residual, tmax, bound = _solve(op, unknown, rhs)
        c[unknown] = np.clip(x, 0.0, 1.0)
    c.setflags(write=False)
    return CommittorResult(probabilities=c, zero=zero, one=one, n_solved=int(unknown.size), residual=residual,
                           max_time=tmax, error_bound=bound)


def committor(op, A, B) -> np.ndarray:
    """float64[S]: probability of hitting B before A (0 on A, 1 on B, harmonic elsewhere)."""
    return committor_result(op, A, B).probabilities


# -------------------------------------------------------------- references


