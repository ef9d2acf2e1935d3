"""Maps on a finite set (functional graphs): finding the states on cycles by pointer doubling.

For f: {0..n-1} -> {0..n-1}, every orbit is eventually periodic. g = f^(2^K)
with 2^K >= n sends every state onto a cycle, and every cycle state is such an
image, so K = ceil(log2 n) gathers (g <- g[g]) find them all in O(n log n).
Used for greedy decoding (a map on states) and by the Krylov preconditioner.
"""

from __future__ import annotations

import numpy as np

__all__ = ["cycle_states"]


def cycle_states(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(on_cycle bool[n], g = f^(2^K) int64[n]) of the map ``f``: which states lie on a cycle.

    f^(2^K)(s) lands on a cycle for every s once 2^K >= n, and every cycle state is such an
    image, so K = ceil(log2 n) gathers find them all.
    """
    f = np.asarray(f, dtype=np.int64)
    n = f.size
    g = f.copy()
    for _ in range(max(1, int(np.ceil(np.log2(max(n, 2)))))):
        g = g[g]
    on_cycle = np.zeros(n, dtype=bool)
    on_cycle[g] = True
    return on_cycle, g
