"""Preconditioned Krylov solves of the big linear systems of the chain, with structured matvecs only.

Three systems reach sizes where sparse LU fails (its fill-in explodes on de
Bruijn graphs, which are expanders: 113 s at 2^16 states for a stationary
solve, 545 s at 87,380 states for basins):

* stationary law of a closed class C: x (I - P + 1 u) = u on C with u a probability
  vector (pi solves it; see :func:`stationary_krylov`), or the reduced M-matrix system
  x (I - Q_j) = P[j, C \\ {j}] of ``method="lu"``;
* absorption probabilities and committors: (I - Q_UU) x = P_{U, not U} h;
* hitting times: (I - Q_UU) k = 1.

All are solved here (with :mod:`semio_jax.linalg.solvers`) by **BiCGSTAB** with right
preconditioning: two products and two preconditioner solves a step and seven vectors in
all, the true residual recomputed whenever the recursion says the target is met. Where it
breaks down or stalls, **restarted GMRES(m)** takes over from its last iterate. On the
2^20-window benchmark chains the two needed about as many products, but GMRES's
Gram-Schmidt over a basis of up to 40 vectors of 8 MB cost as much again as the products
and preconditioner together. A x costs one structured push (row vectors) or pull (column
vectors) over the (N,)*L index (a state's successors are (s mod N^(L-1)) N + y), never a
sparse matrix with N^L rows: a compiled loop (:mod:`semio_jax.linalg.compiled`), or
einsum where numba is off. The diagonal is split off, A x = e * x - P_off x with
e_s = sum of the row's off-diagonal entries = 1 - p_ss (as the LU path does), so a state
that stays put with probability 1 - 1e-20 keeps its exit rate.

**Preconditioner: the greedy part of the chain, solved exactly**, M = I - G with G the
greedy edges s -> succ(s, argmax_y q(y|s)): see :mod:`semio_jax.linalg.greedy_factor`.

**Stopping.** Inside a cycle the solver tracks ||r||_2 of the reduced system; at each
restart (GMRES) or replacement (BiCGSTAB) the true residual is recomputed and the caller's criterion (an L1
residual of pi for the stationary law, an inf-norm residual otherwise) decides.
No certificate comes from here: the callers certify their answers as before
(stationary: 4 tau_j ||pi P - pi||_1 with tau_j from a solve of (I - Q_j) t = 1
checked as an M-matrix inequality; absorption and hitting: max(t) times the
residual).
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.sparse as sp
from scipy.linalg import blas as _blas

from ..errors import ConvergenceError
from . import compiled
from .greedy_factor import GreedyFactor
from .solvers import KrylovInfo, basis_budget, bicgstab, gmres, krylov_solve

__all__ = ["GreedyFactor", "KrylovInfo", "basis_budget", "gmres", "bicgstab", "krylov_solve", "ChainKernels", "BlockKernels", "stationary_krylov", "column_solve",
           "certified_max_time_structured", "hitting_time_certificate"]

_EPS = float(np.finfo(np.float64).eps)


def _l1(r: np.ndarray) -> float:
    """||r||_1 without an |r| temporary (BLAS dasum) where r is a contiguous float64 vector."""
    if r.dtype == np.float64 and r.ndim == 1 and r.flags.c_contiguous:
        return float(_blas.dasum(r))
    return float(np.abs(r).sum())

def _row_argmax(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(argmax, max) of each row of a tall [S, N] table, first maximum on ties (as np.argmax): a pass per
    column, several times faster than np.argmax(axis=1) over a short last axis."""
    best = probs[:, 0].copy()
    tok = np.zeros(probs.shape[0], dtype=np.int64)
    for y in range(1, probs.shape[1]):
        col = probs[:, y]
        better = col > best
        tok[better] = y
        np.maximum(best, col, out=best)
    return tok, best


# ----------------------------------------------------- structured kernels
class ChainKernels:
    """Structured push/pull of an Operator with self-loops split off (see the module docstring).

    ``full_only``: work on the N^L full states only (closed classes live there).

    Nothing as large as the table is copied: the products read ``op.probs`` in place. A
    self-loop s = succ(s, y) exists only at the N constant windows (y, ..., y) (prefix
    states always grow), so the loop-free products are the full products with those N
    entries recomputed from their off-loop terms, never by subtracting the loop (which
    would cancel where p_ss = 1 - 1e-20). ``exits``: float64[size], the off-loop row sums
    (1 - p_ss without cancellation), made on first use: the column products and the
    certificate on the full states add each row as they read it (the same numbers, see
    :func:`compiled.row_sums`), so a power solve and its certificate never store them.
    Every row sum here is added in index order; numpy's ``sum`` (used before) adds rows of
    eight or more entries pairwise, which differs in the last bit on some rows at N >= 8,
    far inside the certificates' rounding margin of 2 (N + 3) eps.
    ``loop_exits``: exits at ``loop_states``.
    """

    def __init__(self, op, full_only: bool = False):
        space = op.space
        self.space = space
        self.n_tok = n = space.n_tokens
        self.full_only = full_only or not space.prefixes
        self.size = space.num_full if self.full_only else space.num_states
        self.probs = op.probs[: self.size]  # a read-only view
        nf = space.num_full
        ones = sum(n**i for i in range(space.length))
        self.loop_states = np.arange(n, dtype=np.int64) * ones  # [N]: the window (y, ..., y) has index y * ones
        self.loop_tok = np.arange(n, dtype=np.int64)
        if nf == 1:  # N = 1: one state, its own successor
            self.loop_states, self.loop_tok = self.loop_states[:1], self.loop_tok[:1]
        rows = self.probs[self.loop_states]  # [N, N]
        off = rows.copy()
        off[np.arange(off.shape[0]), self.loop_tok] = 0.0
        self.loop_exits = compiled.row_sums(off, np.empty(off.shape[0]))  # 1 - p_ss without cancellation
        self._full3 = op.probs[:nf].reshape(n, nf // n, n)  # [a, m, y]: state a*M + m, successor m*N + y
        self._m = nf // n

    @functools.cached_property
    def exits(self) -> np.ndarray:
        e = compiled.row_sums(self.probs, np.empty(self.size))
        e[self.loop_states] = self.loop_exits
        return e

    def certify(self, t: np.ndarray, off: np.ndarray, rows: np.ndarray, margin: float):
        """:func:`compiled.certify_rows` with these kernels' exits (on the full states: from the table)."""
        if compiled.AVAILABLE and self.full_only:
            return compiled.certify_rows_table(self.probs, self.loop_states, self.loop_exits, t, off, rows, margin)
        return compiled.certify_rows(self.exits, t, off, rows, margin)

    def loop_prob(self) -> np.ndarray:
        """float64[size]: p_ss (non-zero only at the constant windows)."""
        out = np.zeros(self.size)
        out[self.loop_states] = self.probs[self.loop_states, self.loop_tok]
        return out

    def _groups(self):
        sp_ = self.space
        for k in range(1, sp_.length):
            yield sp_.group(k), sp_.group(k + 1) if k + 1 < sp_.length else range(0, sp_.num_full)

    def _loop_inflow(self, y: np.ndarray, t: int, tok: int) -> float:
        # (y P_off)[t] at a constant window t = (tok, ..., tok): the in-flow from its N - 1 other predecessors
        preds = np.arange(self.n_tok, dtype=np.int64) * self._m + t // self.n_tok
        preds = preds[preds != t]
        return float(y[preds] @ self.probs[preds, tok])

    def _loop_outflow(self, x: np.ndarray, s: int, tok: int) -> float:
        # (P_off x)[s] at a constant window s: the N - 1 off-loop terms
        n = self.n_tok
        others = np.flatnonzero(np.arange(n) != tok)
        return float(self.probs[s, others] @ x[(s % self._m) * n + others])

    def push_off(self, y: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """(y P_off)[t]: row vector one step forward, self-loops excluded."""
        nf = self.space.num_full
        if out is None:
            out = np.empty(self.size)
        self._push_full(y, out)
        for t, tok in zip(self.loop_states, self.loop_tok):
            out[t] = self._loop_inflow(y, t, tok)
        if not self.full_only:
            out[nf:] = 0.0
            for src, dst in self._groups():
                out[dst.start:dst.stop] += (y[src.start:src.stop, None] * self.probs[src.start:src.stop]).ravel()
        return out

    def shifted_push(self, y: np.ndarray, c: float = 0.0, u: np.ndarray | None = None,
                     out: np.ndarray | None = None) -> np.ndarray:
        """e * y - y P_off + c u (e = ``exits``): the row product of the Krylov systems, in one pass where it can
        (into ``out`` if given, which must not be y or u)."""
        if u is None:
            c, u = 0.0, y  # no rank-one term
        if not (compiled.AVAILABLE and self.full_only):
            return compiled.shift_combine(self.push_off(y, out), self.exits, y, c, u)
        if out is None:
            out = np.empty(self.size)
        compiled.shifted_push(self._full3, self.exits, y, c, u, out)
        for t, tok, e in zip(self.loop_states, self.loop_tok, self.loop_exits):  # the product included the loop
            out[t] = e * y[t] - self._loop_inflow(y, t, tok) + c * u[t]
        return out

    def shifted_pull(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """e * x - P_off x: the column product of the Krylov systems, in one pass where it can (into ``out``
        if given, which must not be x)."""
        if not (compiled.AVAILABLE and self.full_only):
            return compiled.shift_combine(self.pull_off(x, out), self.exits, x, 0.0, x)
        if out is None:
            out = np.empty(self.size)
        compiled.shifted_pull(self._full3, None, x, out)  # (row sums added inline: no exits read)
        for s, tok, e in zip(self.loop_states, self.loop_tok, self.loop_exits):  # the product included the loop
            out[s] = e * x[s] - self._loop_outflow(x, s, tok)
        return out

    def push(self, y: np.ndarray, out: np.ndarray) -> np.ndarray:
        """(y P)[t] on the full states, self-loops included, into ``out`` (full_only kernels)."""
        return self._push_full(y, out)

    def _push_full(self, y: np.ndarray, out: np.ndarray) -> np.ndarray:
        # out[m*N + y'] = sum_a y[a*M + m] P[a*M + m, y'] over the full states: one contraction over a
        # (a compiled loop; einsum where numba is off)
        n, nf, m = self.n_tok, self.space.num_full, self._m
        if compiled.AVAILABLE:
            compiled.push_full(self._full3, y, out)
        else:
            np.einsum("am,amy->my", y[:nf].reshape(n, m), self._full3, out=out[:nf].reshape(m, n))
        return out

    def _pull_full(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        # out[a*M + m] = sum_y' P[a*M + m, y'] x[m*N + y'] over the full states
        n, nf, m = self.n_tok, self.space.num_full, self._m
        if compiled.AVAILABLE:
            compiled.pull_full(self._full3, x, out)
        else:
            np.einsum("amy,my->am", self._full3, x[:nf].reshape(m, n), out=out[:nf].reshape(n, m))
        return out

    def pull_off(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """(P_off x)[s]: column vector one step backward, self-loops excluded."""
        n = self.n_tok
        if out is None:
            out = np.empty(self.size)
        self._pull_full(x, out)
        for s, tok in zip(self.loop_states, self.loop_tok):
            out[s] = self._loop_outflow(x, s, tok)
        if not self.full_only:
            for src, dst in self._groups():
                out[src.start:src.stop] = np.einsum(
                    "sy,sy->s", self.probs[src.start:src.stop], x[dst.start:dst.stop].reshape(-1, n))
        return out

    def greedy_factor(self, inside: np.ndarray, sink: np.ndarray | None = None) -> GreedyFactor:
        """M = I - G for the system restricted to ``inside`` (bool[size]); edges into ``sink`` or out of it dropped."""
        if compiled.AVAILABLE and self.size == self.space.num_full:  # full windows: one compiled pass
            usable = inside if sink is None else inside & ~sink
            parts = compiled.greedy_forest(self.probs, self._m, usable)
            return GreedyFactor.from_forest(self.size, *parts, self.exits)
        s = np.arange(self.size)
        tok, w = _row_argmax(self.probs)  # [size] each; w at a constant window whose greedy token is its loop: p_ss
        f = self.space.successors_of(s, tok)
        keep = inside & inside[f]
        if sink is not None:
            keep &= ~sink & ~sink[f]
        w = np.where(keep, w, 0.0)
        return GreedyFactor(f, w, self.exits)


class BlockKernels:
    """The same products as :class:`ChainKernels` on one closed class, as a chain of its own.

    For a class much smaller than the space (a few ten thousand states among 2^20 windows of a
    32-token model) a structured product reads the whole N^L x N table; here the class's rows
    become a sparse matrix on local indices 0..m-1 (``members[i]`` is state i), built from the
    arithmetic successors, so a product costs m N entries. Self-loops are split off as in
    ChainKernels (``exits``: off-diagonal row sums, no cancellation).
    """

    def __init__(self, op, members: np.ndarray):
        members = np.asarray(members, dtype=np.int64)
        m, n = members.size, op.n_tokens
        self.size, self.n_tok, self.members = m, n, members
        probs = np.array(op.probs[members], dtype=np.float64)  # [m, N]
        succ = op.space.successors_of(members[:, None], np.arange(n)[None, :])  # [m, N] global
        local = np.searchsorted(members, succ)  # [m, N]
        local = np.minimum(local, m - 1)
        ok = (probs > 0) & (members[local] == succ)  # a closed class: every possible successor is a member
        rows = np.broadcast_to(np.arange(m)[:, None], (m, n))
        loop = ok & (local == rows)
        self.loop = np.where(loop, probs, 0.0).sum(axis=1)  # p_ss
        off = ok & ~loop
        self.off = sp.csr_matrix((probs[off], (rows[off], local[off])), shape=(m, m))
        self.off_t = self.off.T.tocsr()
        self.exits = np.asarray(self.off.sum(axis=1)).ravel()
        tok = np.argmax(probs, axis=1)
        self._greedy = (local[np.arange(m), tok], probs[np.arange(m), tok])

    def certify(self, t: np.ndarray, off: np.ndarray, rows: np.ndarray, margin: float):
        """:func:`compiled.certify_rows` with the class's exits."""
        return compiled.certify_rows(self.exits, t, off, rows, margin)

    def push(self, y: np.ndarray, out: np.ndarray) -> np.ndarray:
        out[:] = self.off_t @ y
        out += self.loop * y
        return out

    def push_off(self, y: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        res = self.off_t @ y
        if out is None:
            return res
        out[:] = res
        return out

    def shifted_push(self, y: np.ndarray, c: float = 0.0, u: np.ndarray | None = None,
                     out: np.ndarray | None = None) -> np.ndarray:
        """e * y - y P_off + c u (as :meth:`ChainKernels.shifted_push`)."""
        return compiled.shift_combine(self.push_off(y, out), self.exits, y, c if u is not None else 0.0,
                                      y if u is None else u)

    def shifted_pull(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """e * x - P_off x (as :meth:`ChainKernels.shifted_pull`)."""
        return compiled.shift_combine(self.pull_off(x, out), self.exits, x, 0.0, x)

    def pull_off(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        res = self.off @ x
        if out is None:
            return res
        out[:] = res
        return out

    def greedy_factor(self, inside: np.ndarray, sink: np.ndarray | None = None) -> GreedyFactor:
        f, w = self._greedy
        keep = inside & inside[f]
        if sink is not None:
            keep &= ~sink & ~sink[f]
        return GreedyFactor(f, np.where(keep, w, 0.0), self.exits)


# ------------------------------------------------------------ stationary
def stationary_krylov(op, members: np.ndarray, tol: float = 1e-12, max_matvecs: int = 5000,
                      restart: int = 40, kern: ChainKernels | None = None, reference: int | None = None,
                      start: np.ndarray | None = None, solver: str = "bicgstab", form: str = "rank_one"):
    """pi of the closed class ``members`` (full states) by BiCGSTAB (or GMRES), preconditioned by the greedy factor.

    Two formulations (``form``):

    * ``"rank_one"`` (default): x (I - P + 1 u) = u on C, u a probability vector on C (``start``
      if given, else uniform). Since pi (I - P) = 0 and pi 1 = 1, pi solves it; the rank-one
      term moves the eigenvalue 0 of I - P to u 1 = 1 and leaves the others (1 - lambda_i), so
      the conditioning is the chain's spectral gap (Brauer's theorem);
    * ``"reduced"``: x (I - Q_j) = P[j, C \\ {j}], pi = (x, 1) / Z, the M-matrix system of the LU
      path. Its smallest eigenvalue is about 1 / E_pi[T_j], the time to hit one state: far below
      the spectral gap on big classes (1e-4 against 1/30 on the 2^20-window random transformer,
      where it took 1.2x the products).

    ``reference``: j (a member), whose greedy edges the preconditioner drops (it also serves the
    column system (I - Q_j) t = 1); default: the largest mass of ``start`` if given, else after 8
    steps from the uniform law. ``start``: an approximate pi over the kernel's states (e.g. a
    power run's iterate), the initial guess. ``solver``: "bicgstab" (GMRES takes over if it
    stalls) or "gmres". Returns (pi over all states of op, j, info, the greedy factor).
    Raises ConvergenceError if the L1 residual ||pi P - pi||_1 does not reach ``tol``.
    """
    if form not in ("rank_one", "reduced"):
        raise ValueError(f"unknown form {form!r}; use rank_one or reduced")
    kern = kern or ChainKernels(op, full_only=True)
    size = kern.size
    if members.size and int(members.max()) >= size:
        raise ValueError("a closed class contains a prefix state; prefix states are always transient")
    inside = np.zeros(size, dtype=bool)
    inside[members] = True
    if start is not None:
        start = np.asarray(start, dtype=np.float64)[:size]
        if not (start.min() >= 0.0 and (members.size == size or not start[~inside].any())):
            start = np.where(inside, np.maximum(start, 0.0), 0.0)  # a copy only where start needs cleaning
        total = float(start.sum())
        start = None if not total > 0.0 else (start if abs(total - 1.0) <= 1e-12 else start / total)
    # reference state: largest mass after a few steps from the uniform law on C (only the conditioning depends on it)
    if reference is None and start is not None:
        reference = int(members[np.argmax(start[members])])
    if reference is None:
        v = np.where(inside, 1.0 / members.size, 0.0)
        for _ in range(8):
            v = v * (1.0 - kern.exits) + kern.push_off(v)
        reference = int(np.argmax(v))
        del v  # (not kept beside the solve)
    j = int(reference)
    sink = np.zeros(size, dtype=bool)
    sink[j] = True
    info = KrylovInfo()
    factor = kern.greedy_factor(inside, sink)
    target = 0.5 * tol  # leave room for the clipping and normalisation that follow

    def tol2(r, total):  # the 2-norm target of the recursion that makes the L1 target likely
        ratio = _l1(r) / max(float(np.linalg.norm(r)), 1e-300)
        return 0.5 * target * max(total, 1e-300) / (2.0 * max(ratio, 1.0))

    if form == "rank_one":
        u = start if start is not None else np.where(inside, 1.0 / members.size, 0.0)

        def matvec(x, out):  # x (I - P) + (x 1) u
            return kern.shifted_push(x, float(x.sum()), u, out=out)

        def accept(x, r):
            # r = u - x A gives x (I - P) = (1 - x 1) u - r: the L1 residual of x / (x 1) from r
            total = abs(float(x.sum()))
            l1 = (abs(1.0 - float(x.sum())) + _l1(r)) / max(total, 1e-300)
            info.history.append(l1)
            return l1 <= target, tol2(r, total)

        x, info = krylov_solve(solver, matvec, u, factor.solve_row, accept, restart=restart,
                               max_matvecs=max_matvecs, x0=u, info=info)  # (the solver copies x0)
    else:
        def matvec(y, out):
            kern.shifted_push(y, out=out)
            out[j] = 0.0
            return out

        ej = np.zeros(size)
        ej[j] = 1.0
        b = kern.push_off(ej)  # P[j, .] without its self-loop
        b[j] = 0.0

        def precond(r, out):
            factor.solve_row(r, out)
            out[j] = 0.0
            return out

        def accept(y, r):
            total = 1.0 + float(y.sum())
            l1 = (_l1(r) + abs(float(r.sum()))) / max(total, 1e-300)
            info.history.append(l1)
            return l1 <= target, tol2(r, total)

        y0 = None
        if start is not None and float(start[j]) > 0.0:
            y0 = start / float(start[j])
            y0[j] = 0.0
        x, info = krylov_solve(solver, matvec, b, precond, accept, restart=restart, max_matvecs=max_matvecs,
                               x0=y0, info=info)
        x[j] = 1.0  # (x is the solver's own vector: the solvers copy x0)
    np.maximum(x, 0.0, out=x)  # (x is the solver's own vector)
    if members.size != size:
        np.copyto(x, 0.0, where=~inside)
    x /= x.sum()
    if op is None or op.num_states == size:  # op None: a BlockKernels class of its own
        pi = x
    else:
        pi = np.zeros(op.num_states)
        pi[:size] = x
    res = _l1(kern.shifted_push(pi[:size]))  # ||pi (I - P)||_1, the self-loops split off: one vector
    if not (res <= tol):
        raise ConvergenceError(
            f"the Krylov solve did not reach the stationary residual {tol:g} within {info.matvecs} matvecs (last "
            f"residual {res:.2e}) on a class of {members.size} states; use method='power' with a large max_iter, "
            f"or 'lu'"
        )
    return pi, j, info, factor


def hitting_time_certificate(kern: ChainKernels, inside: np.ndarray, sink: np.ndarray, weights: np.ndarray, *,
                             target: float = 0.05, max_steps: int = 2000, check: int = 8,
                             give_up_early: bool = True) -> tuple[float | None, int]:
    """(tau, matvecs): a certified upper bound on max_{i in inside} E_i[steps to hit ``sink``], or (None, matvecs).

    For a stationary solve the chain already handed over its law ``weights`` (pi of the
    class), and that is nearly all the hitting-time system needs. With A = I - Q (Q: the
    chain on U = inside minus sink) and e = A 1 (the one-step probability of entering the
    sink), the solution t* = A^{-1} 1 is dominated by its constant part: pi A ~ 0 up to the
    flow into the sink, so the slow direction of A is 1 and its weight is fixed by
    pi (1 - A t) = 0. The iteration

        r = 1 - A t;   t += (pi r / pi e) 1   (coarse correction: pi r = 0 afterwards)
        t += omega r                          (Richardson, omega = 1; every ``check``-th step 1/2)

    starts from the coarse solution t = (pi 1 / pi e) 1 and removes the fast components at
    the chain's own mixing rate (the schedule of the power iteration: plain steps, then one
    lazy step, so periodic classes converge too). It stops when ||r||_inf <= ``target``.
    Any t >= 0 with A t >= c 1, c > 0, certifies max A^{-1} 1 <= max t / c
    (:func:`certified_max_time_structured`, with the rounding margin), so the iteration need
    only be accurate to a few per cent: 1 / (1 - target) is the price. On a chain that
    mixed in n power steps this costs about n / 6 pulls where GMRES at the same accuracy
    paid a preconditioner and a growing orthogonal basis. (None, steps) when ``target``
    is not reached in ``max_steps`` (or, with ``give_up_early``, when the observed decay
    projects a miss): the caller then solves by GMRES.
    """
    u = inside & ~sink
    if not u.any():
        return 0.0, 0
    # Two vectors (t, r) and e = A 1_U kept sparse: 1_U, the weights restricted to U and the
    # coarse correction's increments are never stored (r and e are zero off U, so pi r = pi_U r),
    # and e is non-zero only where U can be left in one step (on a whole de Bruijn class: the N
    # predecessors of the sink).
    full = bool(inside.all())
    outside = None if full else ~u
    w = np.asarray(weights, dtype=np.float64)[: kern.size]
    if not np.isfinite(w).all():  # (a weight off U is never read as such, but NaN * 0 would be)
        w = np.where(u & np.isfinite(w), w, 0.0)

    def restrict(v):  # v <- v on U, 0 elsewhere
        if full:
            v[sink] = 0.0
        else:
            np.copyto(v, 0.0, where=outside)
        return v

    def residual(t):  # r = 1 - A t on U, 0 elsewhere; one shifted pull (A t = e * t - P_off t) and one pass
        kern.shifted_pull(t, out=r)
        np.subtract(1.0, r, out=r)
        return restrict(r)

    def add_on_u(t, d):  # t <- t + d 1_U
        if full:
            t += d
            t[sink] = 0.0
        else:
            np.add(t, d, out=t, where=u)

    t = restrict(np.ones(kern.size))  # 1_U, for now
    r = restrict(kern.shifted_pull(t))  # A 1_U, for now
    e_at = np.flatnonzero(r)
    e_val = r[e_at]
    pe = float(w[e_at] @ e_val)
    if not pe > 0.0:
        return None, 1
    t *= float(np.sum(w, where=u)) / pe
    history = []
    steps = 1
    for k in range(1, max_steps + 1):
        residual(t)
        steps += 1
        if k % check == 0:
            d = float(w @ r) / pe
            r[e_at] -= d * e_val  # the residual of t + d 1_U
            add_on_u(t, d)
            worst = max(float(r.max()), -float(r.min()))
            if worst <= target:
                break
            history.append(worst)
            if give_up_early and len(history) > 6:
                rate = (history[-1] / history[-7]) ** (1.0 / (6 * check))
                if rate >= 1.0 or k + np.log(target / worst) / np.log(rate) > max_steps:
                    return None, steps
            r *= 0.5
        t += r
    else:
        return None, steps
    return certified_max_time_structured(kern, inside, sink, t, out=r), steps + 1


def certified_max_time_structured(kern: ChainKernels, inside: np.ndarray, sink: np.ndarray,
                                  t_hat: np.ndarray, out: np.ndarray | None = None) -> float | None:
    """Certified upper bound on max over ``inside`` of (I - Q)^{-1} 1 from an approximate t_hat, or None.

    Q: the chain restricted to ``inside`` (edges to states outside it, or into ``sink``, dropped).
    I - Q is a non-singular M-matrix, so t_hat >= 0 with (I - Q) t_hat >= c 1, c > 0, gives
    (I - Q)^{-1} 1 <= t_hat / c. (I - Q) t_hat and |I - Q| t_hat are evaluated with the
    structured pull; the rounding of each row (at most N + 1 products and sums) is allowed for.
    One pull (into ``out`` when given, a float64[size] buffer) and one compiled pass
    (:func:`compiled.certify_rows`); t_hat is copied only where it is not already zero off the rows.
    """
    rows = inside & ~sink
    if not rows.any():
        return 0.0
    t = np.asarray(t_hat, dtype=np.float64)
    if t.shape != (kern.size,) or np.any(t, where=~rows):
        t = np.where(rows, t, 0.0)  # Q drops the edges leaving the rows: the pull must see zeros there
    if out is not None and np.shares_memory(out, t):
        out = None  # (the pull would overwrite t while reading it)
    off = kern.pull_off(t, out)
    c, tmax, bad = kern.certify(t, off, rows, 2 * (kern.n_tok + 3) * _EPS)
    if bad:
        return None
    return tmax / c if c > 0 else None


def column_solve(kern: ChainKernels, unknown: np.ndarray, rhs: np.ndarray, *, rtol: float = 1e-14,
                 max_matvecs: int = 3000, restart: int = 40, factor: GreedyFactor | None = None,
                 sink: np.ndarray | None = None, solver: str = "bicgstab") -> tuple[np.ndarray, float, KrylovInfo]:
    """Solve (I - Q_UU) x = rhs on the index set ``unknown`` (bool mask over kern.size) by BiCGSTAB
    (GMRES where it stalls; ``solver="gmres"``: GMRES only).

    Q_UU: the chain restricted to U (edges leaving U go to known values, already in rhs;
    ``sink`` states are excluded from U as well). rhs: float64[size] (zero outside U) or [size, m].
    Returns (x [size] or [size, m] with zeros outside U, residual ||(I - Q) x - rhs||_inf, info of the last column).
    """
    u = unknown if sink is None else unknown & ~sink
    factor = factor or kern.greedy_factor(u, sink)
    known = np.flatnonzero(~u)  # usually few (a sink): zeroed in place instead of masking every vector

    # Every vector the solver hands over is zero on the known states: b is, the products and the
    # preconditioner solves are zeroed there, and x, r and the directions are combinations of these.
    # So neither needs its input masked, only its output.
    def matvec(x, out):
        kern.shifted_pull(x, out)
        out[known] = 0.0
        return out

    def precond(r, out):
        factor.solve_col(r, out=out)
        out[known] = 0.0
        return out

    cols = rhs[:, None] if rhs.ndim == 1 else rhs
    out = np.zeros(cols.shape) if rhs.ndim == 2 else None  # one column: its solution is returned as is
    info = KrylovInfo()
    worst = 0.0
    for a in range(cols.shape[1]):
        b = np.asarray(cols[:, a], dtype=np.float64)
        if b[known].any():  # (no copy where rhs is already float64 and zero off U, as it usually is)
            b = np.where(u, b, 0.0)
        scale = float(np.max(np.abs(b))) if b.size else 0.0
        if scale == 0.0:
            if out is None:
                out = np.zeros(cols.shape)
            continue
        info = KrylovInfo()

        def accept(x, r, scale=scale):
            ri = max(float(r.max()), -float(r.min()))  # ||r||_inf without an |r| temporary
            return ri <= rtol * scale, rtol * scale

        x, info = krylov_solve(solver, matvec, b, precond, accept, restart=restart, max_matvecs=max_matvecs, info=info)
        res = matvec(x, np.empty_like(x))
        res -= b
        worst = max(worst, float(np.max(np.abs(res, out=res))))
        if out is None:
            return x, worst, info
        out[:, a] = x
    return (out[:, 0] if rhs.ndim == 1 else out), worst, info
