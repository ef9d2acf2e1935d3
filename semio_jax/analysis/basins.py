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
   above (where LU's fill-in explodes: 545 s at |U| = 85,000) by BiCGSTAB/GMRES with
   structured pulls and the greedy preconditioner, one column per attractor
   (:mod:`semio_jax.linalg.krylov`).
3. **Certificate.** With t = (I - Q_UU)^{-1} 1 (the expected number of steps
   spent in U, solved with the same factorisation),
   ||X_hat - X||_inf <= max(t) * ||residual||_inf, reported as ``error_bound``
   (the residual enlarged by 4 (N + 3) eps for its own floating-point evaluation).

Deterministic operators (greedy, top-k = 1) skip the solve: each state's
basin is the cycle its orbit enters (0/1 probabilities).

Storage. h is an |S| x m object, but only the split states U (those that can
reach two or more attractors) have rows that are not a unit vector. The result
keeps ``owner`` (int64[S]: the sure attractor, or -1) and the |U| x m rows, so
a greedy copy model with thousands of attractors costs |S| integers. The
|U| x m rows are checked against the memory budget before the solve; the dense
[S, m] views are checked when asked for.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.sparse import csgraph

from .._util.memory import refuse_if_over
from ..linalg import krylov
from ..linalg.mmatrix import certified_max_time, killed_generator
from ..errors import ConvergenceError, UnrepresentableWarning
from ._cache import cached_analysis
from .greedy import functional_graph
from .classes import class_structure

#: above this many unknown states the absorption solve uses BiCGSTAB/GMRES instead of sparse LU
KRYLOV_MIN = 8192

__all__ = ["BasinsResult", "basins", "basins_result", "strict_basins", "reachable_attractors", "check_dense_basins"]


@dataclass
class BasinsResult:
    """Absorption probabilities and strict basins, stored compactly.

    Most states end in one attractor with probability 1 (every state of a
    deterministic chain does); only the states that can reach two or more
    attractors (the *split* states, U) carry a row of m numbers. So the result
    holds |S| + |U| m numbers, not |S| m (a greedy copy model has thousands of
    attractors).

    Attributes:
      owner: int64[S]; the attractor state s ends in with probability 1, or -1 if s is split.
      split: int64[U], sorted; the states that can reach two or more attractors.
      split_probabilities: float64[U, m]; their rows of h (solved; exact zeros where unreachable).
      split_reachable: bool[U, m]; which attractors each split state can reach.
      strict: list of sorted int64 arrays; states absorbed into attractor a with probability 1.
      n_solved: number of states whose rows needed the linear solve (= U).
      residual: ||(I - Q) X - b||_inf of that solve (0.0 if none was needed).
      max_row_error: max_s |sum_a h_a(s) - 1|.
      max_absorption_time: certified upper bound on the max expected steps spent among the solved
        states (None if no solve, or if it could not be certified).
      error_bound: certified bound on the entrywise error (0.0 if exact) with respect to the
        model's logits (the table's rounding included); 1.0 (h lies in [0, 1]: nothing certified)
        where ``unrepresentable``.
      unrepresentable: some possible move out of the split states has a probability below the
        float64 range, which the float64 solve treats as 0 (an UnrepresentableWarning is issued).

    Views: ``rows(states)`` and ``reachable_rows(states)`` for chosen states,
    ``absorption(mu)`` = mu h for a start distribution mu, ``sparse()`` (CSR [S, m]);
    the dense ``probabilities`` float64[S, m] and ``reachable`` bool[S, m] are
    refused with StateSpaceTooLargeError when they would not fit.
    """

    owner: np.ndarray
    split: np.ndarray
    split_probabilities: np.ndarray
    split_reachable: np.ndarray
    strict: list
    n_solved: int
    residual: float
    max_row_error: float
    max_absorption_time: float | None
    error_bound: float
    unrepresentable: bool = False

    @property
    def num_states(self) -> int:
        return int(self.owner.size)

    @property
    def n_attractors(self) -> int:
        return len(self.strict)

    def rows(self, states) -> np.ndarray:
        """float64[k, m]: h for the given states (a state index gives float64[m])."""
        return _expand(self.owner, self.split, self.split_probabilities, states)

    def reachable_rows(self, states) -> np.ndarray:
        """bool[k, m]: which attractors the given states can reach."""
        return _expand(self.owner, self.split, self.split_reachable, states)

    def absorption(self, mu) -> np.ndarray:
        """float64[m]: sum_s mu(s) h(s), the law of the attractor finally entered from the start law mu."""
        mu = np.asarray(mu, dtype=np.float64)
        if mu.shape != (self.num_states,):
            raise ValueError(f"mu has shape {mu.shape}, expected ({self.num_states},)")
        single = self.owner >= 0
        out = np.bincount(self.owner[single], weights=mu[single], minlength=self.n_attractors)
        return out + mu[self.split] @ self.split_probabilities if self.split.size else out

    def sparse(self) -> sp.csr_matrix:
        """scipy CSR [S, m]: h with its structural zeros left out."""
        single = np.flatnonzero(self.owner >= 0)
        ui, ua = np.nonzero(self.split_probabilities)
        rows = np.concatenate([single, self.split[ui]])
        cols = np.concatenate([self.owner[single], ua])
        vals = np.concatenate([np.ones(single.size), self.split_probabilities[ui, ua]])
        return sp.csr_matrix((vals, (rows, cols)), shape=(self.num_states, self.n_attractors))

    @property
    def probabilities(self) -> np.ndarray:
        """float64[S, m]: row s is the law of the attractor finally entered from s (refused if too big)."""
        check_dense_basins(self.num_states, self.n_attractors)
        return self.rows(np.arange(self.num_states))

    @property
    def reachable(self) -> np.ndarray:
        """bool[S, m]: reachable[s, a] iff attractor a can be reached from s (refused if too big)."""
        check_dense_basins(self.num_states, self.n_attractors)
        return self.reachable_rows(np.arange(self.num_states))

    def summary(self) -> dict:
        return {
            "n_attractors": self.n_attractors,
            "strict_basin_sizes": [int(s.size) for s in self.strict],
            "n_solved": self.n_solved,
            "residual_inf": self.residual,
            "max_row_error": self.max_row_error,
            "max_absorption_time": self.max_absorption_time,
            "error_bound_inf": self.error_bound,
        }


def _expand(owner: np.ndarray, split: np.ndarray, split_rows: np.ndarray, states) -> np.ndarray:
    """Rows [..., m] of an [S, m] table stored compactly: a unit row (1 / True) at ``owner[s]`` where
    owner[s] >= 0, else the row of s in ``split_rows`` (``split`` sorted); dtype of ``split_rows``."""
    st = np.asarray(states, dtype=np.int64)
    flat = st.reshape(-1)
    m = split_rows.shape[1]
    out = np.zeros((flat.size, m), dtype=split_rows.dtype)
    own = owner[flat]
    single = own >= 0
    out[np.flatnonzero(single), own[single]] = 1
    if (~single).any():
        out[~single] = split_rows[np.searchsorted(split, flat[~single])]
    return out[0] if st.ndim == 0 else out.reshape(st.shape + (m,))


def check_dense_basins(num_states: int, n_attractors: int, memory_limit: int | None = None,
                       what: str = "dense [S, m] tables") -> None:
    """Raise StateSpaceTooLargeError if an [S, m] float64 + bool pair of tables would not fit.

    Used for the dense views of :class:`BasinsResult` and for the split rows
    (|U| x m) before the absorption solve starts.
    """

    refuse_if_over(
        9 * num_states * n_attractors,
        f"basins over {num_states:,} states and {n_attractors:,} attractors: {what} (float64 probabilities "
        f"+ bool reachability)",
        "use rows(states), absorption(mu) or sparse(), which store one number per state that ends in a "
        "single attractor", memory_limit)


def _reach_counts(op) -> tuple[np.ndarray, np.ndarray, list]:
    """(owner int64[S], count int64[S], per-attractor BFS node lists or None) by reverse reachability.

    owner[s]: an attractor s can reach (the only one where count == 1); count[s]: how many it can reach.
    """
    cs = class_structure(op)
    m = len(cs.attractors)
    s = op.num_states
    if op.is_deterministic:
        g = functional_graph(op.space.successors_of(np.arange(s), np.argmax(op.probs, axis=1)))
        return g.cycle_of.astype(np.int64), np.ones(s, dtype=np.int64), None
    if m == 1:
        return np.zeros(s, dtype=np.int64), np.ones(s, dtype=np.int64), None
    rev = op.adjacency().T.tocsr()
    owner = np.full(s, -1, dtype=np.int64)
    count = np.zeros(s, dtype=np.int64)
    for a, members in enumerate(cs.attractors):
        nodes = csgraph.breadth_first_order(rev, int(members[0]), directed=True, return_predecessors=False)
        count[nodes] += 1
        owner[nodes[owner[nodes] < 0]] = a
    return owner, count, rev


def _split_reachable(op, split: np.ndarray, rev) -> np.ndarray:
    """bool[U, m]: which attractors each split state reaches (a second BFS pass, rows for U only).

    The first pass keeps only counts: holding its node lists would cost |S| + |U| m integers
    before the |U| x m check could refuse them; a BFS costs far less than the solve that follows.
    """
    cs = class_structure(op)
    pos = np.full(op.num_states, -1, dtype=np.int64)
    pos[split] = np.arange(split.size)
    out = np.zeros((split.size, len(cs.attractors)), dtype=bool)
    for a, members in enumerate(cs.attractors):
        nodes = csgraph.breadth_first_order(rev, int(members[0]), directed=True, return_predecessors=False)
        p = pos[nodes]
        out[p[p >= 0], a] = True
    return out


@cached_analysis("reachability")
def _reachability(op) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(owner int64[S] with -1 for split states, split int64[U], reach bool[U, m]): exact graph reachability."""
    m = len(class_structure(op).attractors)
    owner, count, rev = _reach_counts(op)
    unknown = np.flatnonzero(count >= 2)
    check_dense_basins(unknown.size, m, what=f"rows for the {unknown.size:,} states that can reach two or more")
    owner = np.where(count >= 2, -1, owner)
    reach_u = _split_reachable(op, unknown, rev) if unknown.size else np.zeros((0, m), dtype=bool)
    return owner, unknown, reach_u


def reachable_attractors(op) -> np.ndarray:
    """bool[S, m]: which attractors each state can reach (exact graph reachability, no solve; refused if too big)."""
    owner, split, reach_u = _reachability(op)
    check_dense_basins(owner.size, reach_u.shape[1])
    return _expand(owner, split, reach_u, np.arange(owner.size))


@cached_analysis("basins")
def basins_result(op) -> BasinsResult:
    """Absorption probabilities into every attractor (see module docstring)."""
    m = len(class_structure(op).attractors)
    owner, unknown, reach_u = _reachability(op)
    strict = [np.flatnonzero(owner == a) for a in range(m)]
    residual, tmax, bound = 0.0, None, 0.0
    if unknown.size > KRYLOV_MIN:
        x, residual, tmax, bound = _solve_krylov(op, owner, unknown, reach_u)
    elif unknown.size:
        rows = op.rows(unknown)  # [U, S]: only the undetermined states' rows, never the whole matrix
        known = np.flatnonzero(owner >= 0)
        # rhs[u, a] = P(u -> the states that end in a for sure)
        flow = rows[:, known].tocoo()
        rhs = np.zeros((unknown.size, m))
        np.add.at(rhs, (flow.row, owner[known][flow.col]), flow.data)
        a_mat = killed_generator(rows, unknown)  # I - Q_UU without cancellation on the diagonal
        try:
            lu = spla.splu(a_mat, permc_spec="COLAMD")
        except RuntimeError as e:  # "Factor is exactly singular": cancellation on a very stiff chain
            raise ConvergenceError(
                f"sparse LU of I - Q failed ({e}) on {unknown.size} states: the chain is too stiff "
                f"(nearly deterministic) for the absorption solve"
            ) from None
        x = lu.solve(rhs)
        for _ in range(2):
            x = x + lu.solve(rhs - a_mat @ x)
        x = np.where(reach_u, np.clip(x, 0.0, 1.0), 0.0)  # exact zeros where unreachable
        residual = float(np.max(np.abs(a_mat @ x - rhs)))
        tmax = certified_max_time(a_mat, lu.solve(np.ones(unknown.size)))
        # allow for the rounding of the residual and of the diagonal (rows of at most N + 2 terms);
        # h and its estimate lie in [0, 1], so 1.0 is always a valid bound (used when tmax is not certified)
        eps = float(np.finfo(np.float64).eps)
        bound = 1.0 if tmax is None else min(1.0, tmax * (residual + 4 * (op.n_tokens + 3) * eps + 2 * op.table_rounding))
    else:
        x = np.zeros((0, m))
    row_err = float(np.max(np.abs(x.sum(axis=1) - 1.0))) if unknown.size else 0.0
    tiny = bool(unknown.size) and op.tiny_moves(unknown)
    if tiny:
        warnings.warn(f"moves out of the {unknown.size} split states have probabilities below the float64 range: "
                      f"the absorption solve treats them as 0 and is not certified", UnrepresentableWarning,
                      stacklevel=2)
        bound = 1.0
    return BasinsResult(
        owner=owner, split=unknown, split_probabilities=x, split_reachable=reach_u, strict=strict,
        n_solved=int(unknown.size), residual=residual, max_row_error=row_err,
        max_absorption_time=tmax, error_bound=bound, unrepresentable=tiny,
    )


def _solve_krylov(op, owner: np.ndarray, unknown: np.ndarray, reach_u: np.ndarray):
    """h on the split states by a Krylov solve with structured pulls (linalg.krylov); (x, residual, tmax, bound).

    One attractor at a time: its right-hand side P 1_{owner = a} on U, the solve, and the residual
    of the clipped column, then only the column's values on U are kept. Beside the result ([U, m])
    the working memory is one solve's (BiCGSTAB's vectors, the greedy factor, the row sums), not m
    columns of right-hand sides and solutions over the whole space.
    """

    kern = krylov.ChainKernels(op)
    m = reach_u.shape[1]
    u = np.zeros(op.num_states, dtype=bool)
    u[unknown] = True
    factor = kern.greedy_factor(u)
    x = np.empty((unknown.size, m))
    col = np.empty(op.num_states)  # the attractor's indicator, then the clipped column, then A of it
    residual = 0.0
    for a in range(m):
        np.equal(owner, a, out=col, casting="unsafe")
        b = kern.pull_off(col)  # P 1_{owner = a} on U: the flow into the states that end in a for sure
        np.copyto(b, 0.0, where=~u)
        xa = np.ascontiguousarray(krylov.column_solve(kern, u, b, factor=factor)[0])
        x[:, a] = np.where(reach_u[:, a], np.clip(xa[unknown], 0.0, 1.0), 0.0)  # exact zeros where unreachable
        col.fill(0.0)
        col[unknown] = x[:, a]
        ax = kern.shifted_pull(col, out=xa)  # (I - Q) of the clipped column on U (xa is spent)
        residual = max(residual, float(np.max(np.abs(ax[unknown] - b[unknown]))))
        del b, xa, ax
    np.copyto(col, u)  # 1_U: the expected time to absorption
    t_hat, _, _ = krylov.column_solve(kern, u, col, factor=factor, rtol=1e-8)
    tmax = krylov.certified_max_time_structured(kern, u, np.zeros_like(u), t_hat, out=col)
    eps = float(np.finfo(np.float64).eps)
    bound = 1.0 if tmax is None else min(1.0, tmax * (residual + 4 * (op.n_tokens + 3) * eps + 2 * op.table_rounding))
    return x, residual, tmax, bound


def basins(op) -> np.ndarray:
    """float64[S, m]: probability of ending in each attractor from every state (rows sum to 1; dense, see
    :class:`BasinsResult` for the compact views)."""
    return basins_result(op).probabilities


def strict_basins(op) -> list[np.ndarray]:
    """For each attractor, the states that end in it with probability 1."""
    return basins_result(op).strict


