"""Communicating classes, attractors (closed classes), transient states, periods.

Write s -> t when the chain can move from s to t in one step (q(y|s) > 0 with
t = succ(s, y)). Two states *communicate* when each reaches the other; the
communicating classes are the strongly connected components of this support
graph. A class C is **closed** when no edge leaves it; closed classes are the
**attractors**: once entered, never left. Every state outside the closed
classes is **transient** (prefix states always are: nothing leads back into
them). The **period** of a closed class is the gcd of the lengths of its cycles,
computed as gcd over edges u -> v inside C of (level(u) + 1 - level(v)) for any
BFS levelling of C.

Only the support graph matters here, so these results are exact (no floating
point): a probability is either zero or not. For deterministic operators
(greedy decoding, top-k = 1) the attractors are the cycles of the map, found
by the functional-graph algorithm of :mod:`semio_jax.analysis.greedy`. When every full
window can emit every token (any temperature without truncation) the support graph on the
full windows is the whole de Bruijn graph B(N, L): one closed class, aperiodic (0...0 loops),
and no search is run.

Order: attractors are sorted by their smallest state index, and each is a
sorted int64 array of state indices.
"""

from __future__ import annotations

from dataclasses import dataclass
import numpy as np
import scipy.sparse as sp
from scipy.sparse import csgraph

from ..linalg.graph import closed_components
from ._cache import cached_analysis
from .greedy import functional_graph

__all__ = ["ClassStructure", "class_structure", "attractors", "transient_states", "periods"]


@dataclass(frozen=True)
class ClassStructure:
    """Result of the class decomposition.

    Attributes:
      labels: int64[S], communicating-class id of each state. (The structure is cached on the
        operator: do not write to its arrays. On a whole de Bruijn class without prefix states
        ``labels`` and ``attractor_of`` are read-only zero-stride views.)
      n_classes: number of communicating classes.
      attractors: list of sorted int64 arrays, the closed classes.
      attractor_of: int64[S], index of the attractor containing s, or -1.
      transient: sorted int64 array of transient states.
      periods: period of each attractor.
    """

    labels: np.ndarray
    n_classes: int
    attractors: list
    attractor_of: np.ndarray
    transient: np.ndarray
    periods: list


@cached_analysis("class_structure")
def class_structure(op) -> ClassStructure:
    """Decompose the operator's support graph (see module docstring)."""
    if op.is_deterministic:
        return _from_functional_graph(op)
    if bool(op.support[: op.space.num_full].all()):
        return _full_de_bruijn(op)
    adj = op.adjacency()
    labels, n_classes, members = closed_components(adj)
    attractor_of = np.full(op.num_states, -1, dtype=np.int64)
    for i, m in enumerate(members):
        attractor_of[m] = i
    per = [_period(adj, m) for m in members]
    return ClassStructure(labels=labels, n_classes=int(n_classes), attractors=members,
                          attractor_of=attractor_of, transient=np.flatnonzero(attractor_of < 0), periods=per)


def _from_functional_graph(op) -> ClassStructure:
    # The map defined by the table itself (each row has a single token of mass 1).
    g = functional_graph(op.space.successors_of(np.arange(op.num_states), np.argmax(op.support, axis=1)))
    labels = np.where(g.on_cycle, g.cycle_of, -1)
    # Off-cycle states are singleton classes (a map visits each at most once).
    off = np.flatnonzero(~g.on_cycle)
    labels[off] = len(g.cycles) + np.arange(off.size)
    members = [np.sort(c) for c in g.cycles]
    attractor_of = np.where(g.on_cycle, g.cycle_of, -1).astype(np.int64)
    return ClassStructure(labels=labels.astype(np.int64), n_classes=len(g.cycles) + off.size,
                          attractors=members, attractor_of=attractor_of,
                          transient=off.astype(np.int64), periods=[len(c) for c in g.cycles])


def _full_de_bruijn(op) -> ClassStructure:
    # Every full window can emit every token: the support graph on the full windows is the whole
    # de Bruijn graph B(N, L), which is strongly connected (any window reaches any other by writing
    # it, in L steps) and aperiodic (the window 0...0 has a self-loop). No graph search is needed.
    # Prefix states only grow, so each is a transient class of its own. Without prefix states
    # every state has label 0 and attractor 0: those two tables are then read-only views of one
    # zero (no memory; at 2^20 states they were 16 MiB of constants).
    nf, s = op.space.num_full, op.num_states
    if s == nf:
        zero = np.broadcast_to(np.zeros(1, dtype=np.int64), (s,))
        return ClassStructure(labels=zero, n_classes=1, attractors=[np.arange(nf, dtype=np.int64)],
                              attractor_of=zero, transient=np.arange(0, dtype=np.int64), periods=[1])
    labels = np.zeros(s, dtype=np.int64)
    labels[nf:] = 1 + np.arange(s - nf)
    attractor_of = np.full(s, -1, dtype=np.int64)
    attractor_of[:nf] = 0
    return ClassStructure(labels=labels, n_classes=1 + s - nf, attractors=[np.arange(nf, dtype=np.int64)],
                          attractor_of=attractor_of, transient=np.arange(nf, s, dtype=np.int64), periods=[1])


def _bfs_levels(order: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """int64[V]: depth of each vertex in the BFS tree given by ``pred`` (pointer jumping, O(V log depth))."""
    level = np.zeros(pred.size, dtype=np.int64)
    anc = np.where(pred >= 0, pred, -1).astype(np.int64)  # the root and unreached vertices have none
    level[anc >= 0] = 1
    live = np.flatnonzero(anc >= 0)
    while live.size:  # invariant: level[v] = depth(v) - depth(anc[v]) for every live v
        a = anc[live]
        level[live] += level[a]
        anc[live] = anc[a]
        live = live[anc[live] >= 0]
    return level


def _period(adj: sp.csr_matrix, members: np.ndarray) -> int:
    """gcd of cycle lengths of the closed class ``members`` (BFS levelling)."""
    if bool((adj.diagonal()[members] > 0).any()):
        return 1  # a self-loop is a cycle of length 1
    sub = adj if members.size == adj.shape[0] else adj[members][:, members].tocsr()
    order, pred = csgraph.breadth_first_order(sub, 0, directed=True, return_predecessors=True)
    level = _bfs_levels(order, pred)
    coo = sub.tocoo()
    g = int(np.gcd.reduce(np.abs(level[coo.row] + 1 - level[coo.col]))) if coo.nnz else 0
    return g if g > 0 else 1


def attractors(op) -> list[np.ndarray]:
    """The closed classes of the chain, each a sorted int64 array, sorted by smallest state."""
    return class_structure(op).attractors


def transient_states(op) -> np.ndarray:
    """Sorted indices of the states outside every closed class."""
    return class_structure(op).transient


def periods(op) -> list[int]:
    """Period of each attractor (1 = aperiodic)."""
    return class_structure(op).periods


