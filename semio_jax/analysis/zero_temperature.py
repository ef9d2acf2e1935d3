"""The zero-temperature limit: which greedy cycles keep the stationary mass as t -> 0, and how long they hold it.

**Resistances.** Under ``temperature(t)`` (optionally with ``top_k(k)``) a state s
allows the tokens A(s): finite logit and, with top-k, among the k largest
(ties to the lowest token id, as in :mod:`semio_jax.core.procedure`). A(s) does
not depend on t. For y in A(s)

    q_t(y | s) = exp(-r(s, y) / t) / Z_t(s),      r(s, y) = max_{y' in A(s)} z_{y'}(s) - z_y(s) >= 0,

with Z_t(s) = sum_{y in A(s)} exp(-r(s, y) / t) -> m(s), the number of maximisers.
r is the **resistance** of the move s -> succ(s, y), in logit units, computed in
float64 from the operator's stored logits (the difference of two float32
numbers, exact whenever they are within a factor 2^29 of each other). So q_t is
a *regular perturbation* of the t -> 0 process P0 (uniform over the argmax
tokens; the greedy map when every maximum is unique) in the sense of Young
(1993), with epsilon = exp(-1/t): epsilon^(-r) q_t -> 1 / m(s) in (0, inf).
Only the support of P0 matters below: the zero-resistance graph.

**Classes, basins.** The recurrent classes C_1..C_K of P0 are the closed
strongly connected components of the zero-resistance graph (the greedy cycles
when maxima are unique). They lie in the full states (prefix states are
transient). The **basin** D(C) is the set of states that P0 takes into C with
probability 1, i.e. from which no other class is reachable along zero-resistance
edges (Ellison 2000's basin of attraction).

**Path resistances.** The resistance of a path is the sum of its moves'
resistances; r_ij is the minimum over paths from C_i to C_j (through any states,
other classes included), found by a multi-source Dijkstra from C_i's states on
the full-state graph (``scipy.sparse.csgraph``, zero-resistance edges stored as
explicit zeros). The **escape resistance** R_i is the minimum resistance of a
path from C_i to a state outside D(C_i) (+inf when none is reachable: the basin
is everything the t > 0 chain can reach from C_i).

**Stochastic potential.** In the complete digraph on the classes with weights
r_ij, a C_j-tree is a spanning in-tree rooted at C_j (every other class has one
outgoing edge, every path ends at C_j). The stochastic potential gamma_j is the
minimum total weight of a C_j-tree (Young 1993, "The evolution of conventions",
Econometrica 61, Theorem 4; the same quantity as Freidlin & Wentzell's
minimum over W-graphs, Random Perturbations of Dynamical Systems, ch. 6), found
by Chu-Liu/Edmonds' minimum arborescence on the reversed class graph
(:func:`min_in_tree`). The theorems assume the t > 0 chain is irreducible; here
the support may have several closed classes (-inf logits, top-k), so everything is
taken inside each closed class A of the t > 0 chain (which P0 cannot leave, so it
holds P0 classes, and which no path from A leaves): ``potential`` is gamma_j
minus the minimum of gamma over the classes in the same A. Then, as t -> 0,

    t log pi_t(C_j) -> -potential_j,                      (Freidlin-Wentzell, Lemma 6.3.1 / Thm 6.4.1)

for pi_t the stationary law of A, so pi_t concentrates on the classes of
potential 0, the **stochastically stable** ones (Young's Theorem 4), and

    t log E_{C_i}[time to leave D(C_i)] -> R_i           (the exit-time estimate of FW ch. 6; Ellison's radius).

A P0 class outside every closed class of the t > 0 chain carries no stationary
mass at any t > 0: potential +inf. Potentials within ``tie_tol`` (1e-9 times the
largest finite class resistance) of the minimum are ties float64 cannot resolve
(different sums of the same float32 differences) and are set to exactly 0.

**Cost.** One Dijkstra per class on N^L states and N^(L+1) edges,
O(K N^(L+1) log N^L), plus K minimum arborescences of O(K^3); 2^20 states with a
few dozen classes take seconds. Procedures whose support changes with t
(top-p, min-p) and greedy decoding (top_k=1 included: no temperature) are
refused with InvalidProcedureError; an operator without stored logits with
LogitsError.

A brute-force reference (every in-tree enumerated, Floyd-Warshall paths) lives in
:func:`semio_jax.testing.references.zero_temperature_reference`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse import csgraph

from .._util.memory import refuse_if_over
from ..errors import InvalidProcedureError, LogitsError, NonFiniteLogitsError, StateSpaceTooLargeError
from ..linalg.graph import closed_components
from ..linalg.gth import gth_log
from ._cache import cached_analysis
from .hitting import hitting_times

__all__ = ["ZeroTemperatureLimit", "zero_temperature_limit", "min_in_tree", "allowed_tokens", "log_escape_time",
           "TIE_RTOL", "ESCAPE_GTH_MAX"]

#: potentials closer than TIE_RTOL * (largest finite class resistance) to the minimum count as ties
TIE_RTOL = 1e-9
#: largest regenerative chain (states before the exit + 1) that log_escape_time solves (dense, O(n^3))
ESCAPE_GTH_MAX = 1025


@dataclass(frozen=True)
class ZeroTemperatureLimit:
    """The t -> 0 limit of a temperature-sampled chain (see the module docstring).

    Attributes:
      classes: list of K sorted int64 arrays, the recurrent classes of P0 (full-state indices),
        sorted by their smallest state.
      potential: float64[K]; stochastic potential minus the minimum over the classes of the same
        closed class of the t > 0 chain (0 for the stable ones, +inf where ``attractor`` is -1).
      stable: int64 array, the indices of the classes with potential 0.
      escape: float64[K]; escape resistance R (+inf when no state outside the basin is reachable).
      resistance: float64[K, K]; r_ij, the minimum path resistance from class i to class j
        (0 on the diagonal, +inf where unreachable).
      attractor: int64[K]; the closed class of the t > 0 chain (support from the logits, numbered
        by smallest state) that holds class i, or -1 if class i is transient for t > 0.
      basin: int64[N^L]; the class that P0 enters with probability 1 from each full state, or -1.
      cycles: list of K int64 arrays; class i in P0's orbit order from its smallest state when P0 is a
        cycle on it (one zero-resistance move per state), else the sorted class.
      is_cycle: bool[K]; whether P0 is a cycle on class i (always, when every maximum is unique).
      temperature: the temperature of the operator it was computed from (the limit does not depend on it).
      tie_tol: the tie tolerance used for ``stable``.
    """

    classes: list
    potential: np.ndarray
    stable: np.ndarray
    escape: np.ndarray
    resistance: np.ndarray
    attractor: np.ndarray
    basin: np.ndarray
    cycles: list
    is_cycle: np.ndarray
    temperature: float
    tie_tol: float

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def predicted_escape_times(self, t: float | None = None) -> np.ndarray:
        """float64[K]: exp(R / t), the leading-order escape time at temperature t (default: the operator's)."""
        t = self.temperature if t is None else float(t)
        with np.errstate(over="ignore"):
            return np.exp(self.escape / t)

    def escape_targets(self, i: int) -> np.ndarray:
        """Sorted full-state indices outside the basin of class i (the escape target set)."""
        return np.flatnonzero(self.basin != i)

    def exact_escape_times(self, op) -> np.ndarray:
        """float64[K]: E[steps to leave the basin] from each class's smallest state, by the hitting-time solver.

        ``op`` is the operator at the temperature of interest (the same model and space).
        +inf where the basin is everything reachable (escape resistance +inf).
        """
        out = np.full(self.n_classes, np.inf)
        for i, members in enumerate(self.classes):
            target = self.escape_targets(i)
            if target.size and np.isfinite(self.escape[i]):
                out[i] = float(hitting_times(op, target)[int(members[0])])
        return out

    def log_escape_times(self, op, max_states: int = ESCAPE_GTH_MAX) -> np.ndarray:
        """float64[K]: log E[steps to leave the basin] from each class's smallest state, by
        :func:`log_escape_time` (GTH in the log domain: accurate where the escape takes e^300 steps).

        +inf where the escape resistance is +inf. Where the chain before the exit has more than
        ``max_states`` states the next method takes over: log of :meth:`exact_escape_times`'s
        hitting-time solve (which raises if it cannot produce a finite, certified-or-flagged value).
        """
        out = np.full(self.n_classes, np.inf)
        for i, members in enumerate(self.classes):
            if np.isfinite(self.escape[i]):
                try:
                    out[i] = log_escape_time(op, int(members[0]), self.basin != i, max_states)
                except StateSpaceTooLargeError:
                    h = float(hitting_times(op, self.escape_targets(i))[int(members[0])])
                    out[i] = np.log(h)
        return out

    def summary(self) -> dict:
        return {
            "n_classes": self.n_classes,
            "class_sizes": [int(c.size) for c in self.classes],
            "potential": [float(x) for x in self.potential],
            "stable": [int(i) for i in self.stable],
            "escape_resistance": [float(x) for x in self.escape],
            "attractor": [int(a) for a in self.attractor],
            "temperature": self.temperature,
        }


# ----------------------------------------------------------------- pure kernels
def allowed_tokens(logits: np.ndarray, top_k: int | None = None) -> np.ndarray:
    """bool[S, N]: the tokens a temperature(t) [+ top_k] procedure can draw, for every t > 0.

    Finite logits, and with top-k the k largest by a stable sort (ties to the lowest token id).
    """
    z = np.asarray(logits, dtype=np.float64)  # [S, N]
    keep = np.isfinite(z)
    if top_k is not None:
        order = np.argsort(-z, axis=1, kind="stable")  # [S, N] descending, ties by increasing id
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.arange(z.shape[1])[None, :].repeat(z.shape[0], 0), axis=1)
        keep &= rank < top_k
    return keep


def _resistances(z: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """float64[S, N]: max_{kept} z - z_y on kept tokens, +inf elsewhere."""
    zmax = np.max(np.where(keep, z, -np.inf), axis=1, keepdims=True)  # [S, 1]
    return np.where(keep, zmax - np.where(keep, z, 0.0), np.inf)  # [S, N]


def _graph(succ: np.ndarray, weight: np.ndarray, mask: np.ndarray) -> sp.csr_matrix:
    """CSR [V, V] with an edge s -> succ[s, y] of weight weight[s, y] wherever mask[s, y] (zeros kept)."""
    v = succ.shape[0]
    counts = mask.sum(axis=1)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return sp.csr_matrix((weight[mask].astype(np.float64), succ[mask].astype(np.int64), indptr), shape=(v, v))


def _reached_from(graph_rev: sp.csr_matrix, sources: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(reached bool[V], the source each state was reached from int64[V], -1 if none) by one multi-source BFS."""
    v = graph_rev.shape[0]
    if sources.size == 0:
        return np.zeros(v, dtype=bool), np.full(v, -1, dtype=np.int64)
    dist, _, src = csgraph.dijkstra(graph_rev, directed=True, indices=sources, unweighted=True, min_only=True,
                                    return_predecessors=True)
    return np.isfinite(dist), src.astype(np.int64)


def _strict_basins(zero: sp.csr_matrix, classes: list) -> np.ndarray:
    """int64[V]: the only P0 class reachable along zero-resistance edges, or -1 when two or more are.

    One BFS backwards from every class state names a reachable class a(s); a state reaches another
    class too iff it reaches a zero edge s' -> u with a(u) != a(s') (then a second backward BFS).
    """
    v = zero.shape[0]
    class_of = np.full(v, -1, dtype=np.int64)
    for i, c in enumerate(classes):
        class_of[c] = i
    rev = zero.T.tocsr()
    _, src = _reached_from(rev, np.flatnonzero(class_of >= 0))
    owner = class_of[src]  # every state reaches a closed class of a finite graph
    coo = zero.tocoo()
    bad = np.unique(coo.row[owner[coo.row] != owner[coo.col]])
    multi, _ = _reached_from(rev, bad)
    return np.where(multi, -1, owner)


def _cycle_order(zero: sp.csr_matrix, members: np.ndarray) -> np.ndarray | None:
    """members in orbit order from the smallest when each has one zero-resistance move; else None."""
    deg = np.diff(zero.indptr)[members]
    if not np.all(deg == 1):
        return None
    nxt = zero.indices[zero.indptr[members]]
    out = [int(members[0])]
    step = dict(zip(members.tolist(), nxt.tolist()))
    s = step[out[0]]
    while s != out[0]:
        out.append(s)
        s = step[s]
    return np.asarray(out, dtype=np.int64)


def min_in_tree(weights, root: int) -> float:
    """Minimum total weight of a spanning in-tree rooted at ``root`` (every other node has exactly one
    outgoing edge; all paths end at ``root``), for weights[i, j] the cost of the edge i -> j (+inf: no edge;
    the diagonal is ignored). +inf if no in-tree exists.

    Chu-Liu/Edmonds on the reversed graph (an in-tree of W is an out-arborescence of W^T):
    every non-root node takes its cheapest incoming edge; if these form no cycle they are optimal;
    else each cycle is contracted to one node, edges entering it at v are charged w - (v's chosen cost),
    and the cycle's cost is added. Dense, O(n^3) in all.
    """
    w = np.array(weights, dtype=np.float64).T.copy()  # w[u, v]: arborescence edge u -> v
    n = w.shape[0]
    if w.shape != (n, n) or not 0 <= root < n:
        raise ValueError(f"weights must be square and root in [0, {n}), got {w.shape} and {root}")
    if np.isnan(w).any() or (w < 0).any():
        raise ValueError("weights must be non-negative numbers or +inf")
    total = 0.0
    while True:
        n = w.shape[0]
        np.fill_diagonal(w, np.inf)
        pre = np.argmin(w, axis=0)  # [n] cheapest parent of each node
        cost = w[pre, np.arange(n)]
        pre[root], cost[root] = root, 0.0
        if not np.all(np.isfinite(cost)):
            return float("inf")
        comp = np.full(n, -1, dtype=np.int64)
        mark = np.full(n, -1, dtype=np.int64)
        n_cyc = 0
        for v in range(n):
            u = v
            while mark[u] < 0 and u != root:
                mark[u] = v
                u = int(pre[u])
            if u != root and mark[u] == v and comp[u] < 0:  # a new cycle through u
                x = u
                while True:
                    comp[x] = n_cyc
                    x = int(pre[x])
                    if x == u:
                        break
                n_cyc += 1
        if n_cyc == 0:
            return total + float(cost.sum())
        in_cycle = comp >= 0
        total += float(cost[in_cycle].sum())
        new_id = comp.copy()
        new_id[~in_cycle] = n_cyc + np.arange(int((~in_cycle).sum()))
        adj = w - np.where(in_cycle, cost, 0.0)[None, :]  # [n, n] entering a cycle at v replaces v's edge
        m = int(new_id.max()) + 1
        w = np.full((m, m), np.inf)
        np.minimum.at(w, (new_id[:, None], new_id[None, :]), adj)
        root = int(new_id[root])


def log_escape_time(op, start: int, target, max_states: int = ESCAPE_GTH_MAX) -> float:
    """log E_start[min{n >= 0: X_n in target}] for full states ``start`` and ``target`` (bool[N^L]),
    without subtractions, from the operator's log-probabilities.

    Regenerative chain: the full states U reachable from ``start`` before the target, plus one
    state T for the whole target that jumps back to ``start``. One cycle T -> start -> ... -> T
    lasts 1 + tau steps, so pi(T) = 1 / (1 + E[tau]) (Kac), and GTH in the log domain
    (:func:`semio_jax.linalg.gth.gth_log`) gives log pi(T) to high relative accuracy however small;
    log E = log(1 - pi(T)) - log pi(T). +inf when some state of U cannot reach the target
    (the escape is not certain: E is infinite). Raises StateSpaceTooLargeError when
    |U| + 1 > max_states (the dense log-domain GTH would not fit; use the hitting-time solver).
    """
    nf = op.space.num_full
    tgt = np.asarray(target, dtype=bool)
    if tgt.shape != (nf,) or tgt[start] or not tgt.any():
        raise ValueError("target must be a non-empty bool mask over the full states that excludes start")
    logp = np.asarray(op.log_probs[:nf], dtype=np.float64)  # [V, N], -inf off the support
    succ = op.space.successor_table()[:nf]
    live = np.isfinite(logp) & ~tgt[:, None]  # [V, N] moves that can be made before the exit
    graph = _graph(succ, np.ones_like(logp), live)
    reached, _ = _reached_from(graph, np.array([start]))
    u = np.flatnonzero(reached & ~tgt)
    back, _ = _reached_from(graph.T.tocsr(), np.flatnonzero(tgt))
    if not back[u].all():
        return float("inf")
    n = u.size
    if n + 1 > max_states:
        raise StateSpaceTooLargeError(
            f"the escape from state {start} passes through {n} states, over the log-domain GTH limit of "
            f"{max_states}; use ZeroTemperatureLimit.exact_escape_times (the hitting-time solver)")
    pos = np.full(nf, -1, dtype=np.int64)
    pos[u] = np.arange(n)
    rows = logp[u]  # [n, N]
    dest = succ[u]  # [n, N]
    block = np.full((n + 1, n + 1), -np.inf)
    inside = np.isfinite(rows) & (pos[dest] >= 0)
    ri, yi = np.nonzero(inside)
    block[ri, pos[dest[ri, yi]]] = rows[ri, yi]  # distinct tokens lead to distinct states
    out = np.isfinite(rows) & tgt[dest]
    ro, yo = np.nonzero(out)
    np.logaddexp.at(block[:, n], ro, rows[ro, yo])
    block[n, pos[start]] = 0.0
    log_pt = float(gth_log(block)[n])
    return float(np.log(-np.expm1(log_pt)) - log_pt) if log_pt < 0 else float("-inf")


# ----------------------------------------------------------------- the analysis
def _check_operator(op) -> None:
    proc = op.procedure
    if proc is None:
        raise InvalidProcedureError("the zero-temperature limit needs the operator's procedure (temperature(t), "
                                    "optionally with top_k); this operator was given a bare table")
    if proc.greedy or proc.top_k == 1:
        raise InvalidProcedureError(
            f"procedure {proc.spec!r} is greedy decoding: it has no temperature, so there is no t -> 0 limit to "
            f"take; build the operator with temperature(t) (t > 0) instead, e.g. 'temperature=0.5'")
    if proc.top_p is not None or proc.min_p is not None:
        raise InvalidProcedureError(
            f"procedure {proc.spec!r} truncates by probability (top_p/min_p), so the set of possible tokens "
            f"changes with t and the chain is not a regular perturbation of its t -> 0 limit; use temperature(t), "
            f"optionally with top_k")
    if op.logits is None:
        raise LogitsError("the zero-temperature limit is computed from the model's logits, and this operator was "
                          "built without them; rebuild it with build_operator(..., keep_logits=True)")


@cached_analysis("zero_temperature_limit")
def zero_temperature_limit(op) -> ZeroTemperatureLimit:
    """The recurrent classes of P0, their stochastic potentials and escape resistances (module docstring)."""
    _check_operator(op)
    space = op.space
    nf, n = space.num_full, space.n_tokens
    # CSR graphs (zero-resistance and full support) and the per-state work arrays: about 60 bytes per edge
    refuse_if_over(60 * nf * n, f"the zero-temperature limit on {nf:,} full states x {n} tokens",
                   "use a smaller state space")
    z = np.asarray(op.logits[:nf], dtype=np.float64)  # [V, N]
    if np.isnan(z).any() or np.isposinf(z).any():
        s = int(np.argwhere(np.isnan(z) | np.isposinf(z))[0, 0])
        raise NonFiniteLogitsError(f"the logits of state {space.label(s)} contain NaN or +inf: {z[s]}")
    keep = allowed_tokens(z, op.procedure.top_k)  # [V, N]
    if not keep.any(axis=1).all():
        s = int(np.flatnonzero(~keep.any(axis=1))[0])
        raise NonFiniteLogitsError(f"every logit of state {space.label(s)} is -inf: no token can follow it")
    r = _resistances(z, keep)  # [V, N]
    succ = space.successor_table()[:nf]  # [V, N] full states map to full states
    support = _graph(succ, r, keep)  # weighted by resistance, zero-resistance edges kept as explicit zeros
    zero = _graph(succ, r, keep & (r == 0.0))

    _, _, classes = closed_components(zero)
    k = len(classes)
    basin = _strict_basins(zero, classes)
    labels_t, _, attractors_t = closed_components(support)
    attractor_id = np.full(labels_t.max() + 1, -1, dtype=np.int64)
    for a, members in enumerate(attractors_t):
        attractor_id[labels_t[members[0]]] = a
    attractor = np.array([attractor_id[labels_t[c[0]]] for c in classes], dtype=np.int64)

    res = np.full((k, k), np.inf)
    escape = np.full(k, np.inf)
    flat = np.concatenate(classes)  # [sum |C|] every class state, class by class
    starts = np.cumsum([0] + [c.size for c in classes[:-1]])  # [K]
    for i, members in enumerate(classes):
        dist = csgraph.dijkstra(support, directed=True, indices=members, min_only=True)  # [V]
        res[i] = np.minimum.reduceat(dist[flat], starts)
        outside = basin != i
        if outside.any():
            escape[i] = float(dist[outside].min())
    np.fill_diagonal(res, 0.0)

    finite = res[np.isfinite(res)]
    tie_tol = TIE_RTOL * max(float(finite.max()) if finite.size else 0.0, 1.0)
    potential = np.full(k, np.inf)
    for a in range(len(attractors_t)):
        idx = np.flatnonzero(attractor == a)
        sub = res[np.ix_(idx, idx)]  # [k_a, k_a] all finite: the class is irreducible at t > 0
        gamma = np.array([min_in_tree(sub, j) for j in range(idx.size)])
        rel = gamma - gamma.min()
        potential[idx] = np.where(rel <= tie_tol, 0.0, rel)
    stable = np.flatnonzero(potential == 0.0)
    orbits = [_cycle_order(zero, c) for c in classes]
    is_cycle = np.array([o is not None for o in orbits], dtype=bool)
    for arr in (potential, escape, res, basin, attractor, is_cycle):
        arr.setflags(write=False)
    return ZeroTemperatureLimit(classes=classes, potential=potential, stable=stable, escape=escape,
                                resistance=res, attractor=attractor, basin=basin,
                                cycles=[c if o is None else o for o, c in zip(orbits, classes)], is_cycle=is_cycle,
                                temperature=float(op.procedure.temperature), tie_tol=tie_tol)
