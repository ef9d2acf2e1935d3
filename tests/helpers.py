"""Slow, independent references for the tests (plain Python / numpy / exact rationals).

Nothing here uses the engine's algorithms: states are enumerated by hand from
the documented conventions, and the linear algebra is done in exact rational
arithmetic (``fractions.Fraction``) where a floating-point oracle would be no
better than the code under test.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np

import semio_jax as sj
from semio_jax.testing import references
from semio_jax import sampling as S
from semio_jax.testing.references import gth_rational


# ------------------------------------------------------------------ procedures
# ------------------------------------------------------------------ operators
def brute_force(model, n_tokens: int, length: int, prefixes: bool, procedure):
    """(probs, succ, logits) built from the documented conventions only: no StateSpace, no engine code.

    Every state's tokens are enumerated by hand (full states in big-endian
    order, then prefix states grouped by length), the model is called on them
    (one call per length, the contexts stacked in index order), the procedure
    is applied by the loop reference, and successors follow the definition.
    """
    groups = [length] + (list(range(1, length)) if prefixes else [])
    states = []
    logits = []
    for k in groups:
        ctx = list(itertools.product(range(n_tokens), repeat=k))
        states += ctx
        logits.append(np.asarray(model(np.asarray(ctx, dtype=np.int32))))
    logits = np.concatenate(logits, axis=0)
    index = {s: i for i, s in enumerate(states)}
    succ = np.zeros((len(states), n_tokens), dtype=np.int64)
    for i, s in enumerate(states):
        for y in range(n_tokens):
            nxt = s[1:] + (y,) if len(s) == length else s + (y,)
            succ[i, y] = index[nxt]
    probs = references.probabilities_reference(S.parse(procedure), logits.astype(np.float64))
    return probs, succ, logits


def dense_reference(op) -> np.ndarray:
    """The |S| x |S| transition matrix by a loop over (state, token)."""
    p = np.zeros((op.num_states, op.num_states))
    succ = op.successors  # computed on each access: once here
    for s in range(op.num_states):
        for y in range(op.n_tokens):
            p[s, succ[s, y]] += op.probs[s, y]
    return p


def state_permutation(space: sj.StateSpace, perm: np.ndarray) -> np.ndarray:
    """sigma[s] = index of the state whose tokens are perm applied to the tokens of s."""
    sigma = np.empty(space.num_states, dtype=np.int64)
    for s in range(space.num_states):
        sigma[s] = space.index(perm[space.tokens(s)])
    return sigma


def relabel(op, perm: np.ndarray):
    """The same chain with every token y renamed perm[y] (in the states and in the table)."""
    sigma = state_permutation(op.space, perm)
    probs = np.empty_like(op.probs)
    probs[np.ix_(sigma, perm)] = op.probs  # new[sigma(s), perm(y)] = old[s, y]
    logits = None
    if op.logits is not None:
        logits = np.empty_like(op.logits)
        logits[np.ix_(sigma, perm)] = op.logits
    return sj.Operator(op.space, probs, op.procedure, logits=logits), sigma


# ------------------------------------------------------------ exact rationals
def exact_rows(op, states) -> dict:
    """{s: {t: Fraction}} for the given states, each row normalised to sum exactly 1.

    The float table sums to 1 only within rounding; normalising in exact
    arithmetic defines the chain the table represents (a relative change of
    ~1e-16 per entry).
    """
    rows = {}
    for s in states:
        row: dict[int, Fraction] = {}
        for y in range(op.n_tokens):
            p = op.probs[s, y]
            if p > 0:
                t = op.space.successor(s, y)
                row[t] = row.get(t, Fraction(0)) + Fraction(float(p))
        total = sum(row.values())
        rows[s] = {t: v / total for t, v in row.items()}
    return rows


def exact_stationary(op, members) -> dict:
    """The stationary distribution of the closed class ``members`` by GTH in exact rationals."""
    members = [int(m) for m in members]
    n = len(members)
    pos = {s: i for i, s in enumerate(members)}
    a = [[Fraction(0)] * n for _ in range(n)]
    for s, row in exact_rows(op, members).items():
        for t, v in row.items():
            a[pos[s]][pos[t]] += v
    pi = gth_rational(a)
    return {s: pi[pos[s]] for s in members}


def exact_absorption(op, attractor_sets, rational: bool = False) -> tuple:
    """Absorption probabilities from an exact rational solve (Gauss-Jordan).

    Returns (float64[S, m] rounded from the exact values, bool[S, m] telling
    where the exact value is exactly 1), and with ``rational`` the exact values
    themselves (a list of S rows of m Fractions) as a third element.

    The unknowns are the states that reach two or more attractors; every
    other state's row is 0/1 by graph reachability (computed here by a plain
    search over the exact support).
    """
    s_count = op.num_states
    m = len(attractor_sets)
    rows = exact_rows(op, range(s_count))
    # reachability by depth-first search on the support
    reach = np.zeros((s_count, m), dtype=bool)
    rev: dict[int, list[int]] = {t: [] for t in range(s_count)}
    for s, row in rows.items():
        for t in row:
            rev[t].append(s)
    for a, members in enumerate(attractor_sets):
        stack = [int(x) for x in members]
        seen = set(stack)
        while stack:
            t = stack.pop()
            for s in rev[t]:
                if s not in seen:
                    seen.add(s)
                    stack.append(s)
        reach[list(seen), a] = True
    h = [[Fraction(0)] * m for _ in range(s_count)]
    unknown = [s for s in range(s_count) if reach[s].sum() >= 2]
    for s in range(s_count):
        if reach[s].sum() == 1:
            h[s][int(np.argmax(reach[s]))] = Fraction(1)
    if unknown:
        pos = {s: i for i, s in enumerate(unknown)}
        u = len(unknown)
        # augmented system (I - Q) X = R h_known, one column per attractor
        mat = [[Fraction(0)] * (u + m) for _ in range(u)]
        for s in unknown:
            i = pos[s]
            mat[i][i] += 1
            for t, v in rows[s].items():
                if t in pos:
                    mat[i][pos[t]] -= v
                else:
                    for a in range(m):
                        mat[i][u + a] += v * h[t][a]
        for c in range(u):  # Gauss-Jordan; I - Q is a non-singular M-matrix, pivot on the diagonal
            piv = mat[c][c]
            row_c = [v / piv for v in mat[c]]
            mat[c] = row_c
            for r in range(u):
                if r != c and mat[r][c]:
                    f = mat[r][c]
                    mat[r] = [vr - f * vc for vr, vc in zip(mat[r], row_c)]
        for s in unknown:
            h[s] = mat[pos[s]][u:]
    values = np.array([[float(v) for v in row] for row in h]).reshape(s_count, m)
    ones = np.array([[v == 1 for v in row] for row in h], dtype=bool).reshape(s_count, m)
    return (values, ones, h) if rational else (values, ones)


def period_by_traces(op, members) -> int:
    """gcd of the n <= |C| with a closed walk of length n inside C (= the period of C)."""
    members = list(members)
    pos = {s: i for i, s in enumerate(members)}
    n = len(members)
    adj = np.zeros((n, n), dtype=np.int64)
    for s in members:
        for y in range(op.n_tokens):
            if op.probs[s, y] > 0 and op.space.successor(s, y) in pos:
                adj[pos[s], pos[op.space.successor(s, y)]] = 1
    g = 0
    power = np.eye(n, dtype=np.int64)
    for k in range(1, n + 1):
        power = ((power @ adj) > 0).astype(np.int64)
        if np.trace(power):
            g = math.gcd(g, k)
    return g


# ------------------------------------------------------------------ memory
def traced_peak(fn, *args, **kwargs):
    """(fn's result, the most bytes numpy and Python held at once during the call beyond what was held
    before it) by tracemalloc, which sees every numpy buffer: a test can then say how many vectors
    a routine keeps at its peak, deterministically (RSS would add the allocator's and the OS's noise)."""
    import tracemalloc

    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        out = fn(*args, **kwargs)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return out, peak
