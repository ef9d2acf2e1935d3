"""Directed graphs of chains: strongly connected components and which of them are closed.

The closed communicating classes of a Markov chain are the strongly connected
components of its support graph that no edge leaves (scipy's csgraph finds the
components; one pass over the edges marks the open ones).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse import csgraph

__all__ = ["closed_components"]


def closed_components(graph: sp.csr_matrix) -> tuple[np.ndarray, int, list]:
    """(SCC labels int64[V], number of SCCs, the closed SCCs as sorted arrays ordered by smallest state).

    A strongly connected component is closed when no edge leaves it. O(V + E) plus one sort.
    """
    n, labels = csgraph.connected_components(graph, directed=True, connection="strong")
    labels = labels.astype(np.int64)
    coo = graph.tocoo()
    leaving = labels[coo.row] != labels[coo.col]
    open_ = np.zeros(n, dtype=bool)
    open_[labels[coo.row[leaving]]] = True
    order = np.argsort(labels, kind="stable")  # states grouped by label, increasing within a group
    bounds = np.searchsorted(labels[order], np.arange(n + 1))
    members = [order[bounds[c]:bounds[c + 1]] for c in np.flatnonzero(~open_)]
    members.sort(key=lambda m: int(m[0]))
    return labels, int(n), members
