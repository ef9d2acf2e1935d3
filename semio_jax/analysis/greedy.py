"""Greedy dynamics: the deterministic map s -> succ(s, argmax_y q(y | s)).

Under greedy decoding the chain is a map f: S -> S, i.e. a *functional graph*
(every state has exactly one successor). Its structure is computed
combinatorially, without linear algebra:

* every orbit s, f(s), f^2(s), ... is eventually periodic; the **cycles** are
  the attractors (the closed classes of the chain), and each state's **basin**
  is the one cycle its orbit enters, so basin membership is 0/1;
* the **tail length** of s is the number of steps before its orbit first
  reaches a cycle (0 on cycles); pre-period + period <= |S|.

Algorithm (vectorised, O(|S| log |S|)): pointer doubling. f^(2^K) with
2^K >= |S| sends every state onto a cycle, so the image of f^(2^K) is the set
of cyclic states. The minimum state along each cycle (also by doubling) names
the cycle; tails are found by peeling layers off the cycles backwards.
A plain orbit-walking reference lives in :func:`greedy_reference` (test oracle).
Ties in the argmax go to the lowest token id.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..linalg.functional_graph import cycle_states
from ._cache import cached_analysis

__all__ = ["GreedyDynamics", "greedy_map", "greedy_dynamics", "functional_graph"]


@dataclass(frozen=True)
class GreedyDynamics:
    """The structure of a functional graph f: S -> S.

    Attributes:
      map: int64[S], f(s).
      cycles: list of int64 arrays, each cycle listed in orbit order starting
        from its smallest state; cycles sorted by their smallest state.
      cycle_of: int64[S], index (into ``cycles``) of the cycle each state's orbit enters.
      tail: int64[S], steps before the orbit reaches its cycle (0 on cycles).
      on_cycle: bool[S].
    """

    map: np.ndarray
    cycles: list
    cycle_of: np.ndarray
    tail: np.ndarray
    on_cycle: np.ndarray

    @property
    def periods(self) -> list[int]:
        return [len(c) for c in self.cycles]

    def basin(self, i: int) -> np.ndarray:
        """States whose orbit enters cycle i."""
        return np.flatnonzero(self.cycle_of == i)

    def orbit(self, s: int, n: int) -> np.ndarray:
        """The first n+1 states s, f(s), ..., f^n(s)."""
        out = np.empty(n + 1, dtype=np.int64)
        out[0] = s
        for t in range(n):
            out[t + 1] = self.map[out[t]]
        return out


def greedy_map(op) -> np.ndarray:
    """f(s) = succ(s, argmax_y): from the logits when the operator kept them, else from probs.

    Ties go to the lowest token id (``np.argmax`` returns the first maximiser).
    """
    table = op.logits if getattr(op, "logits", None) is not None else op.probs
    tokens = np.argmax(table, axis=1)  # [S]
    return op.space.successors_of(np.arange(op.num_states), tokens)


def functional_graph(f: np.ndarray) -> GreedyDynamics:
    """Cycles, basins and tails of the map ``f`` (int array, f[s] in [0, len(f)))."""
    f = np.asarray(f, dtype=np.int64)
    n = f.size
    steps = max(1, int(np.ceil(np.log2(max(n, 2)))))
    on_cycle, g = cycle_states(f)
    # Name each cycle by its smallest state: min over f^j(s), j < 2^K >= period.
    label = np.arange(n, dtype=np.int64)
    h = f.copy()
    for _ in range(steps):
        label = np.minimum(label, label[h])
        h = h[h]
    cycle_min = label[g]  # [S] smallest state of the cycle each orbit enters
    heads = np.unique(cycle_min[on_cycle])  # sorted smallest states
    index_of_head = np.full(n, -1, dtype=np.int64)
    index_of_head[heads] = np.arange(heads.size)
    cycle_of = index_of_head[cycle_min]
    cycles = []
    for head in heads:
        cyc = [int(head)]
        s = int(f[head])
        while s != head:
            cyc.append(s)
            s = int(f[s])
        cycles.append(np.asarray(cyc, dtype=np.int64))
    # Tails: peel layers backwards from the cycles.
    tail = np.where(on_cycle, 0, -1).astype(np.int64)
    done = on_cycle.copy()
    t = 0
    while not done.all():
        t += 1
        new = ~done & done[f]
        tail[new] = t
        done |= new
    return GreedyDynamics(map=f, cycles=cycles, cycle_of=cycle_of, tail=tail, on_cycle=on_cycle)


@cached_analysis("greedy_dynamics")
def greedy_dynamics(op) -> GreedyDynamics:
    """Functional-graph structure of the operator's greedy map (see module docstring)."""
    return functional_graph(greedy_map(op))


