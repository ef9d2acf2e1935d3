"""Basins: the probability of ending in each attractor, from every state.

For attractors A_1..A_m and a state s, the absorption probability
h_a(s) = P_s(the chain eventually enters A_a) satisfies

    h_a = 1 on A_a,   h_a = 0 on A_b (b != a),   h_a(s) = sum_y q(y|s) h_a(succ(s, y)) elsewhere,

and sum_a h_a(s) = 1 (a finite chain is absorbed with probability 1).

Computation:

1. **Support, exactly.** By graph reachability (one reverse breadth-first
   search per attractor) we find which attractors each state can reach. Where
   a state reaches only attractor a, h(s) = e_a exactly; where it cannot reach
   b, h_b(s) = 0 exactly. The **strict basin** of a is the set of states that
   reach a and no other attractor, i.e. h_a(s) = 1.
2. **The rest, by one sparse solve.** On the set U of states that reach two
   or more attractors, (I - Q_UU) X = P_{U, not U} h_{not U} is solved by
   sparse LU with two steps of iterative refinement when |U| <= 8192, and
   above (where LU's fill-in explodes: 545 s at |U| = 85,000) by GMRES with
   structured pulls and the greedy preconditioner, one column per attractor
   (:mod:`semio_jax.analysis.krylov`).
3. **Certificate.** With t = (I - Q_UU)^{-1} 1 (the expected number of steps
   spent in U, solved with the same factorisation),
   ||X_hat - X||_inf <= max(t) * ||residual||_inf, reported as ``error_bound``
   (the residual enlarged by 4 (N + 3) eps for its own floating-point evaluation).

Deterministic operators (greedy, top-k = 1) skip the solve: each state's
basin is the cycle its orbit enters (0/1 probabilities).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.sparse import csgraph

from ._cache import cached_analysis
from .classes import class_structure

#: above this many unknown states the absorption solve uses GMRES instead of sparse LU
KRYLOV_MIN = 8192

__all__ = ["BasinsResult", "basins", "basins_result", "strict_basins", "reachable_attractors",
           "basins_reference", "check_dense_basins"]


@dataclass
class BasinsResult:
    """Absorption probabilities and strict basins.

    Attributes:
      probabilities: float64[S, m]; row s is the distribution of the attractor finally entered from s.
      reachable: bool[S, m]; reachable[s, a] iff attractor a can be reached from s.
      strict: list of sorted int64 arrays; states absorbed into attractor a with probability 1.
      n_solved: number of states whose rows needed the linear solve.
      residual: ||(I - Q) X - b||_inf of that solve (0.0 if none was needed).
      max_row_error: max_s |sum_a h_a(s) - 1|.
      max_absorption_time: certified upper bound on the max expected steps spent among the solved
        states (None if no solve, or if it could not be certified).
      error_bound: certified bound on the entrywise error (0.0 if exact).
    """

    probabilities: np.ndarray
    reachable: np.ndarray
    strict: list
    n_solved: int
    residual: float
    max_row_error: float
    max_absorption_time: float | None
    error_bound: float

    def summary(self) -> dict:
        return {
            "n_attractors": int(self.probabilities.shape[1]),
            "strict_basin_sizes": [int(s.size) for s in self.strict],
            "n_solved": self.n_solved,
            "residual_inf": self.residual,
            "max_row_error": self.max_row_error,
            "max_absorption_time": self.max_absorption_time,
            "error_bound_inf": self.error_bound,
        }


def check_dense_basins(num_states: int, n_attractors: int, memory_limit: int | None = None) -> None:
    """Raise StateSpaceTooLargeError if the dense [S, m] basin arrays would not fit.

    Absorption probabilities are an |S| x m object (float64, plus the bool
    reachability table of the same shape); a chain with very many attractors
    (a greedy copy model has one per necklace) is refused here, before any work.
    """
    from ..errors import StateSpaceTooLargeError
    from ..operator import _fmt_bytes, available_memory

    need = 9 * num_states * n_attractors
    limit = int(memory_limit) if memory_limit is not None else int(0.5 * available_memory())
    if need > limit:
        raise StateSpaceTooLargeError(
            f"basins over {num_states:,} states and {n_attractors:,} attractors need dense [S, m] tables of "
            f"{_fmt_bytes(need)} (float64 probabilities + bool reachability), over the budget of "
            f"{_fmt_bytes(limit)} (half the available memory). The attractors themselves are available "
            f"(class_structure); for a deterministic operator greedy_dynamics gives each state's cycle")


@cached_analysis("reachable_attractors")
def reachable_attractors(op) -> np.ndarray:
    """bool[S, m]: which attractors each state can reach (exact graph reachability)."""
    cs = class_structure(op)
    m = len(cs.attractors)
    check_dense_basins(op.num_states, m)
    out = np.zeros((op.num_states, m), dtype=bool)
    if op.is_deterministic:
        from .greedy import functional_graph
        g = functional_graph(op.successors[np.arange(op.num_states), np.argmax(op.probs, axis=1)])
        out[np.arange(op.num_states), g.cycle_of] = True
        return out
    if m == 1:
        out[:, 0] = True
        return out
    rev = op.adjacency().T.tocsr()
    for a, members in enumerate(cs.attractors):
        nodes = csgraph.breadth_first_order(rev, int(members[0]), directed=True, return_predecessors=False)
        out[nodes, a] = True
    return out


@cached_analysis("basins")
def basins_result(op) -> BasinsResult:
    """Absorption probabilities into every attractor (see module docstring)."""
    cs = class_structure(op)
    reach = reachable_attractors(op)
    s, m = reach.shape
    h = np.zeros((s, m))
    count = reach.sum(axis=1)
    single = count == 1
    h[single] = reach[single]  # exact 0/1 rows
    strict = [np.flatnonzero(single & reach[:, a]) for a in range(m)]
    unknown = np.flatnonzero(count >= 2)
    residual, tmax, bound = 0.0, None, 0.0
    if unknown.size > KRYLOV_MIN:
        residual, tmax, bound = _solve_krylov(op, h, unknown, reach)
    elif unknown.size:
        mat = op.csr
        known = np.flatnonzero(count < 2)
        from .stationary import _off_diagonal
        off, exits = _off_diagonal(mat)  # P without its diagonal; exits = 1 - p_ii
        q = off[unknown][:, unknown].tocsc()
        rhs = mat[unknown][:, known] @ h[known]  # [U, m]
        a_mat = (sp.diags(exits[unknown]) - q).tocsc()  # I - Q_UU without cancellation on the diagonal
        try:
            lu = spla.splu(a_mat, permc_spec="COLAMD")
        except RuntimeError as e:  # "Factor is exactly singular": cancellation on a very stiff chain
            from ..errors import ConvergenceError
            raise ConvergenceError(
                f"sparse LU of I - Q failed ({e}) on {unknown.size} states: the chain is too stiff "
                f"(nearly deterministic) for the absorption solve"
            ) from None
        x = lu.solve(rhs)
        for _ in range(2):
            x = x + lu.solve(rhs - a_mat @ x)
        x = np.where(reach[unknown], np.clip(x, 0.0, 1.0), 0.0)  # exact zeros where unreachable
        residual = float(np.max(np.abs(a_mat @ x - rhs)))
        from .stationary import _certified_max_time
        tmax = _certified_max_time(a_mat, lu.solve(np.ones(unknown.size)))
        # allow for the rounding of the residual and of the diagonal (rows of at most N + 2 terms);
        # h and its estimate lie in [0, 1], so 1.0 is always a valid bound (used when tmax is not certified)
        eps = float(np.finfo(np.float64).eps)
        bound = 1.0 if tmax is None else min(1.0, tmax * (residual + 4 * (op.n_tokens + 3) * eps))
        h[unknown] = x
    return BasinsResult(
        probabilities=h, reachable=reach, strict=strict, n_solved=int(unknown.size), residual=residual,
        max_row_error=float(np.max(np.abs(h.sum(axis=1) - 1.0))) if s else 0.0,
        max_absorption_time=tmax, error_bound=bound,
    )


def _solve_krylov(op, h: np.ndarray, unknown: np.ndarray, reach: np.ndarray):
    """Fill h[unknown] by GMRES with structured pulls (semio_jax.analysis.krylov); (residual, tmax, bound)."""
    from .krylov import ChainKernels, certified_max_time_structured, column_solve

    kern = ChainKernels(op)
    u = np.zeros(op.num_states, dtype=bool)
    u[unknown] = True
    known_h = np.where(u[:, None], 0.0, h)
    rhs = np.stack([np.where(u, kern.pull_off(known_h[:, a]), 0.0) for a in range(h.shape[1])], axis=1)
    factor = kern.greedy_factor(u)
    x, _, _ = column_solve(kern, u, rhs, factor=factor)
    x = np.where(reach & u[:, None], np.clip(x, 0.0, 1.0), 0.0)  # exact zeros where unreachable
    ax = np.stack([kern.exits * x[:, a] - kern.pull_off(x[:, a]) for a in range(h.shape[1])], axis=1)
    residual = float(np.max(np.abs(ax - rhs)[unknown]))
    t_hat, _, _ = column_solve(kern, u, np.where(u, 1.0, 0.0), factor=factor, rtol=1e-8)
    tmax = certified_max_time_structured(kern, u, np.zeros_like(u), t_hat)
    eps = float(np.finfo(np.float64).eps)
    bound = 1.0 if tmax is None else min(1.0, tmax * (residual + 4 * (op.n_tokens + 3) * eps))
    h[unknown] = x[unknown]
    return residual, tmax, bound


def basins(op) -> np.ndarray:
    """float64[S, m]: probability of ending in each attractor from every state (rows sum to 1)."""
    return basins_result(op).probabilities


def strict_basins(op) -> list[np.ndarray]:
    """For each attractor, the states that end in it with probability 1."""
    return basins_result(op).strict


def basins_reference(probs: np.ndarray, succ: np.ndarray, attractor_sets: list) -> np.ndarray:
    """Slow reference: iterate h <- P h from the attractor indicators until it stops changing."""
    s = probs.shape[0]
    m = len(attractor_sets)
    h = np.zeros((s, m))
    inside = np.full(s, -1)
    for a, members in enumerate(attractor_sets):
        inside[list(members)] = a
        h[list(members), a] = 1.0
    for _ in range(100_000):
        new = np.einsum("sy,sya->sa", probs, h[succ])
        new[inside >= 0] = h[inside >= 0]
        if np.max(np.abs(new - h)) < 1e-15:
            return new
        h = new
    return h
