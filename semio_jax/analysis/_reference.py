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


def gth_rational(a: list) -> list:
    """Stationary vector of an irreducible stochastic matrix by GTH in exact rationals.

    ``a``: a list of rows of ``fractions.Fraction`` (copied, not modified). Returns
    the normalised stationary vector as Fractions: no rounding anywhere.
    """
    from fractions import Fraction

    a = [row[:] for row in a]
    n = len(a)
    for k in range(n - 1, 0, -1):  # eliminate state k: fold its flow into the states below it
        s = sum(a[k][:k])
        for i in range(k):
            a[i][k] /= s
        for i in range(k):
            if a[i][k]:
                for j in range(k):
                    if a[k][j]:
                        a[i][j] += a[i][k] * a[k][j]
    pi = [Fraction(1)] + [Fraction(0)] * (n - 1)
    for k in range(1, n):
        pi[k] = sum(pi[i] * a[i][k] for i in range(k))
    z = sum(pi)
    return [x / z for x in pi]
