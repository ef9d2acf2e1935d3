"""Shared pieces of the slow reference paths (the tests' oracles).

Kept deliberately naive: loops over states and tokens, no use of the
Operator's structure, so they check the fast kernels rather than share their bugs.
"""

from __future__ import annotations

import numpy as np


def dense_block(probs: np.ndarray, succ: np.ndarray, members) -> tuple[np.ndarray, list[int]]:
    """The transition matrix restricted to ``members`` by a loop over (state, token).

    Returns (float64[n, n] with p[i, j] = P(members[i] -> members[j]), members as a list).
    Transitions leaving ``members`` are dropped.
    """
    members = [int(s) for s in members]
    pos = {s: i for i, s in enumerate(members)}
    p = np.zeros((len(members), len(members)))
    for s in members:
        for y in range(probs.shape[1]):
            t = int(succ[s, y])
            if probs[s, y] > 0 and t in pos:
                p[pos[s], pos[t]] += probs[s, y]
    return p, members
