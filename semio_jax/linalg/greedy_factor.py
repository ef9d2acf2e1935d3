"""The greedy factor: a preconditioner for I - P with an exact O(S log S) solve.

At a low temperature (the slowly mixing chains) each state s moves to f(s) = succ(s,
argmax_y q(y|s)) with probability w(s) close to 1. Write A = I - G - R with G
the matrix of these greedy edges (G[s, f(s)] = w(s)) and R the rest; M = I - G
(an "incomplete factorisation" that keeps one edge per row) has an exact O(S log S)
solve because G is a functional graph:

* on the tails (states off the greedy cycles) X = G restricted to tail edges is
  nilpotent: ordered so that every state comes before its image, v (I - X)^{-1} is one
  pass v[f(s)] += w(s) v[s] in that order and (I - X)^{-1} x the reverse pass (compiled,
  :func:`semio_jax.linalg.compiled.row_sweep`; exact to rounding). Without numba the
  product (I + X)(I + X^2)(I + X^4) ... is used instead: X^(2^i) is again a functional
  graph, precomputed by pointer doubling, applied as a gather (columns) or a bincount
  (rows); path weights below 2^-30 (``TINY_WEIGHT``) and levels whose weights average
  below ``MIN_LEVEL_WEIGHT`` are left out, so that form is exact only at low temperature;
* on the greedy cycles (few states) the small system I - Y (Y: the cycle edges)
  is factorised once by sparse LU; tails feed the cycles and never the reverse,
  so the two parts are solved one after the other.

On the full windows (ChainKernels) the factor is built by one compiled pass over the table
(:func:`semio_jax.linalg.compiled.greedy_forest`: argmax, masks, topological order and edge
lists, int32 work arrays): 16-35 ms at 2^20 windows, where the numpy construction took 50-180 ms
and made about 130 MB of temporaries.

Then A M^{-1} = I - R M^{-1}: the greedy transients (tails of length up to
hundreds, the rotation along a cycle) are removed exactly and what is left is
the leakage R (small at low temperature) and a few near-singular directions,
one per greedy cycle (the metastable states), which the Krylov solver resolves in a
few iterations. Measured on N=2, L=16 chains (order-4 n-gram, order-16 random
logits, mixtures; temperatures 0.2 to 1): 14 to 45 matvecs to an L1 residual
of 1e-13, where lazy power iteration needs 10^3 to 10^5 steps and unpreconditioned
GMRES(40) up to several thousand. At high temperature the greedy edges carry
less mass and M is a weaker (but still useful) preconditioner; those chains mix fast.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from . import compiled
from .functional_graph import cycle_states

__all__ = ["GreedyFactor", "TINY_WEIGHT", "MIN_LEVEL_WEIGHT"]

#: path weights of the greedy factor's doubling levels below this are dropped (see GreedyFactor)
TINY_WEIGHT = 2.0**-30
#: a doubling level whose path weights average below this (over the states with a tail edge) ends the
#: levels: on the 2^20-window random transformer (greedy weights ~0.7) levels 4-7 average 0.07 to 0 and
#: cost a third of each preconditioner solve without saving a product; on the slow n-gram chain
#: every level averages 0.37 or more and each one saves products
MIN_LEVEL_WEIGHT = 0.1


class GreedyFactor:
    """Solves with I - G, G the weighted functional graph s -> f(s) with weight w(s) (w = 0: no edge).

    With ``sweep`` (the default where numba is available, :mod:`semio_jax.linalg.compiled`) the
    tails are solved by one compiled pass in topological order: exact to rounding. Without it,
    by the numpy doubling levels, exact up to the path weights left out: those below
    TINY_WEIGHT, and every level past the first whose weights average below ``min_level_weight``
    (0: keep every level, an exact solve up to TINY_WEIGHT). ``loop_exit[s]`` is 1 - w(s) computed without cancellation, used where f(s) = s.
    ``solve_col(b)`` returns (I - G)^{-1} b (column vectors, pull direction);
    ``solve_row(r)`` returns (I - G^T)^{-1} r (row vectors, push direction).
    """

    def __init__(self, f: np.ndarray, w: np.ndarray, loop_exit: np.ndarray,
                 min_level_weight: float = MIN_LEVEL_WEIGHT, sweep: bool | None = None):
        n = f.size
        self.n = n
        w = np.where(w > 0, w, 0.0)
        idx_t = np.int32 if n < 2**31 else np.int64
        f_eff = np.where(w > 0, f, np.arange(n)).astype(idx_t)
        if compiled.AVAILABLE if sweep is None else sweep:
            # one compiled pass over the tails in topological order: exact, nothing dropped
            self._from_parts(*compiled.forest_parts(f_eff, w), loop_exit)
            return
        self.levels = []
        self._sweep = None
        on_cycle, _ = cycle_states(f_eff)  # only this is needed: tails and cycle lists are not
        self._doubling_levels(f_eff, w, ~on_cycle, min_level_weight)
        cyc = np.flatnonzero(on_cycle & (w > 0))
        self._factor_cycles(cyc, f_eff[cyc], w[cyc], loop_exit)

    @classmethod
    def from_forest(cls, n: int, src, dst, wt, cyc, cyc_dst, cyc_w, loop_exit: np.ndarray) -> "GreedyFactor":
        """The swept factor from the parts :func:`semio_jax.linalg.compiled.forest_parts` returns
        (tail edges in sweep order; cyclic states with their edges), without the full-size arrays of
        the constructor."""
        self = cls.__new__(cls)
        self.n = n
        self._from_parts(src, dst, wt, cyc, cyc_dst, cyc_w, loop_exit)
        return self

    def _from_parts(self, src, dst, wt, cyc, cyc_dst, cyc_w, loop_exit: np.ndarray) -> None:
        self.levels, self._sweep = [], (src, dst, wt)
        self._factor_cycles(cyc, cyc_dst, cyc_w, loop_exit)

    def _doubling_levels(self, f_eff: np.ndarray, w: np.ndarray, tail: np.ndarray, min_level_weight: float) -> None:
        # doubling levels of the tail part: X^(2^i) as (states, targets, weights)
        n = self.n
        idx = np.arange(n, dtype=np.int64)
        F = np.where(tail, f_eff, idx)
        W = np.where(tail, w, 0.0)
        W[W < TINY_WEIGHT] = 0.0
        base = max(np.count_nonzero(W), 1)  # states with a tail edge: a level's mean path weight is over these
        act, Wa = None, None  # while most states are active: full-length F, W (no copies: each level makes new arrays)
        while len(self.levels) <= 64:
            if self.levels and float((W if act is None else Wa).sum()) < min_level_weight * base:
                break  # the paths left carry too little weight to be worth a pass per solve
            if act is None:
                live = np.count_nonzero(W)
                if live > n // 2:  # dense level: full-length arrays (one gather instead of three)
                    self.levels.append((None, F, W))
                    W = W * W[F]
                    # Drop path weights below TINY_WEIGHT (products of probabilities): on fast
                    # chains (greedy weights ~0.5) the levels then empty after a few doublings
                    # instead of running to the longest tail. M stays a preconditioner (the Krylov
                    # solver judges the true residual); only its exactness is lost, in terms
                    # TINY_WEIGHT times smaller than the ones it keeps.
                    W[W < TINY_WEIGHT] = 0.0
                    F = F[F]
                    continue
                act = np.flatnonzero(W)
                Fa, Wa = F[act], W[act]
            if act.size == 0:
                break
            # sparse levels: only the active states are followed (W and F stay full-length lookups)
            self.levels.append((act, Fa, Wa))
            Wn, Fn = Wa * W[Fa], F[Fa]
            W[act] = 0.0
            keep = Wn >= TINY_WEIGHT
            act, Fa, Wa = act[keep], Fn[keep], Wn[keep]
            W[act], F[act] = Wa, Fa

    def _factor_cycles(self, cyc: np.ndarray, dst: np.ndarray, wc: np.ndarray, loop_exit: np.ndarray) -> None:
        # the cycles: (I - Y) on the cyclic states with an edge (cyc -> dst with weight wc), by sparse LU
        self.cyc = np.asarray(cyc, dtype=np.int64)
        self.lu = None
        if self.cyc.size:
            src = self.cyc  # ascending; a cyclic state's successor is the next state of its cycle, so among them
            loop = dst == src
            diag = np.ones(src.size)
            diag[loop] = loop_exit[src[loop]]
            rows = np.arange(src.size)[~loop]
            cols = np.searchsorted(src, dst[~loop])
            y = sp.coo_matrix((-wc[~loop], (rows, cols)), shape=(src.size,) * 2)
            mat = (y + sp.diags(diag)).tocsc()
            for damp in (0.0, 1e-12, 1e-8):
                try:
                    self.lu = spla.splu(mat if damp == 0 else (y * (1 - damp) + sp.diags(diag)).tocsc(),
                                        permc_spec="COLAMD")
                    break
                except RuntimeError:  # 1 - prod(w) rounded to 0 on a cycle: damp the preconditioner slightly
                    continue
            if self.lu is None:
                self.cyc = np.zeros(0, dtype=np.int64)

    def solve_col(self, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """x = (I - G)^{-1} b (into ``out`` if given, else a new vector)."""
        x = np.array(b, dtype=np.float64, copy=True) if out is None else _copy_into(out, b)
        if self.cyc.size:
            x[self.cyc] = self.lu.solve(x[self.cyc])
        if self._sweep is not None:
            compiled.col_sweep(*self._sweep, x)
        for act, tgt, wt in self.levels:  # (no levels when swept)
            if act is None:
                x += wt * x[tgt]
            else:
                x[act] += wt * x[tgt]
        return x

    def solve_row(self, r: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """v = r (I - G)^{-1} (into ``out`` if given, else a new vector)."""
        v = np.array(r, dtype=np.float64, copy=True) if out is None else _copy_into(out, r)
        if self._sweep is not None:
            compiled.row_sweep(*self._sweep, v)
        for act, tgt, wt in self.levels:  # (no levels when swept)
            v += np.bincount(tgt, wt * (v if act is None else v[act]), minlength=self.n)
        if self.cyc.size:
            v[self.cyc] = self.lu.solve(v[self.cyc], trans="T")
        return v


def _copy_into(out: np.ndarray, x: np.ndarray) -> np.ndarray:
    np.copyto(out, x)
    return out
