"""The slow, obviously correct implementations that the tests use as oracles, one per fast kernel.

Kept deliberately naive: loops over states and tokens, no use of the
Operator's structure, so they check the fast kernels rather than share their bugs.
"""

from __future__ import annotations

import decimal
import itertools
import math
from math import gcd

import numpy as np

from ..core.procedure import Procedure
from ..errors import ConvergenceError


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


def gth_unblocked(block: np.ndarray) -> np.ndarray:
    """Reference GTH: one state eliminated at a time by a rank-1 update (the textbook loop; test oracle)."""
    a = np.array(block, dtype=np.float64, copy=True)
    n = a.shape[0]
    if n == 1:
        return np.ones(1)
    for k in range(n - 1, 0, -1):
        s = a[k, :k].sum()  # = 1 - a[k, k] after reduction, computed without subtraction
        if s <= 0.0:
            raise ConvergenceError(f"GTH: state {k} has no remaining exit rate; use method='lu'")
        a[:k, k] /= s
        a[:k, :k] += np.outer(a[:k, k], a[k, :k])
    pi = np.zeros(n)
    pi[0] = 1.0
    for k in range(1, n):
        pi[k] = pi[:k] @ a[:k, k]
    return pi / pi.sum()


def stationary_reference(probs: np.ndarray, succ: np.ndarray, members) -> np.ndarray:
    """Slow reference: dense eigenvector of P restricted to ``members`` for eigenvalue 1."""
    p, members = dense_block(probs, succ, members)
    n = len(members)
    # Solve pi (P - I) = 0 with sum(pi) = 1 as a least-squares system.
    a = np.vstack([(p - np.eye(n)).T, np.ones((1, n))])
    b = np.zeros(n + 1)
    b[-1] = 1.0
    pi = np.linalg.lstsq(a, b, rcond=None)[0]
    out = np.zeros(probs.shape[0])
    out[members] = pi
    return out


# ---------------------------------------------------------------- basins
def basins_reference(probs: np.ndarray, succ: np.ndarray, attractor_sets: list) -> np.ndarray:
    """Slow reference: iterate h <- P h from the attractor indicators until it stops changing."""
    s = probs.shape[0]
    m = len(attractor_sets)
    h = np.zeros((s, m))
    inside = np.full(s, -1)
    for a, members in enumerate(attractor_sets):
        inside[list(members)] = a
        h[list(members), a] = 1.0
    for _ in range(100_000):
        new = np.einsum("sy,sya->sa", probs, h[succ])
        new[inside >= 0] = h[inside >= 0]
        if np.max(np.abs(new - h)) < 1e-15:
            return new
        h = new
    return h


# ---------------------------------------------------------------- bounds
def dobrushin_reference(probs: np.ndarray, succ: np.ndarray, num_full: int, steps: int) -> float:
    """Slow reference: loop-built dense P restricted to full states, P^steps, every pair's TV."""
    p = np.zeros((num_full, num_full))
    for i in range(num_full):
        for y in range(probs.shape[1]):
            p[i, int(succ[i, y])] += probs[i, y]
    q = np.linalg.matrix_power(p, steps)
    best = 0.0
    for i in range(num_full):
        for j in range(num_full):
            best = max(best, 0.5 * float(np.abs(q[i] - q[j]).sum()))
    return best


# ---------------------------------------------------------------- classes
def classes_reference(probs: np.ndarray, succ: np.ndarray) -> tuple[list[list[int]], list[int]]:
    """Slow reference: closed classes and periods by transitive closure (tiny spaces only).

    Returns (closed classes as sorted lists sorted by first element, periods).
    """
    s = probs.shape[0]
    reach = np.zeros((s, s), dtype=bool)
    for i in range(s):
        for y in range(probs.shape[1]):
            if probs[i, y] > 0:
                reach[i, succ[i, y]] = True
    step = reach.copy()
    closure = reach | np.eye(s, dtype=bool)
    while True:  # Warshall-style squaring
        nxt = closure | (closure.astype(np.int64) @ closure.astype(np.int64) > 0)
        if (nxt == closure).all():
            break
        closure = nxt
    closed = []
    seen = set()
    for i in range(s):
        if i in seen:
            continue
        cls = [j for j in range(s) if closure[i, j] and closure[j, i]]
        seen.update(cls)
        if all(not reach[a, b] or b in cls for a in cls for b in range(s)):
            closed.append(sorted(cls))
    closed.sort(key=lambda c: c[0])
    per = []
    for cls in closed:  # period = gcd of n with (P^n)_{ii} > 0, n <= 2|C|
        i = cls[0]
        m = step.astype(np.int64)
        g = 0
        power = np.eye(s, dtype=np.int64)
        for n in range(1, 2 * len(cls) + 1):
            power = (power @ m > 0).astype(np.int64)
            if power[i, i]:
                g = gcd(g, n)
        per.append(g)
    return closed, per


# ---------------------------------------------------------------- entropy
def entropy_rate_reference(probs: np.ndarray, succ: np.ndarray, members) -> float:
    """Slow reference: pi from a dense eigenvector of the class block, then -sum pi(s) P(s,t) log P(s,t)."""
    members = list(members)
    pos = {s: i for i, s in enumerate(members)}
    k = len(members)
    block = np.zeros((k, k))
    for s in members:
        for y in range(probs.shape[1]):
            if probs[s, y] > 0:
                block[pos[s], pos[int(succ[s, y])]] += probs[s, y]
    # pi (P - I) = 0, sum pi = 1, as a least-squares system
    a = np.vstack([(block - np.eye(k)).T, np.ones((1, k))])
    b = np.zeros(k + 1)
    b[-1] = 1.0
    pi = np.linalg.lstsq(a, b, rcond=None)[0]
    h = 0.0
    for i in range(k):
        for j in range(k):
            if block[i, j] > 0:
                h -= pi[i] * block[i, j] * math.log(block[i, j])
    return float(h)


def path_entropy_reference(probs: np.ndarray, succ: np.ndarray, start: int, n: int) -> float:
    """Slow reference: -sum_w p(w) log p(w) over all N^n strings w from one start state."""
    d0 = np.zeros(probs.shape[0])
    d0[start] = 1.0
    p = strings_reference(probs, succ, d0, n)
    return float(-sum(x * math.log(x) for x in p if x > 0))


# ---------------------------------------------------------------- evolution
def _dense(probs: np.ndarray, succ: np.ndarray) -> np.ndarray:
    s, nt = probs.shape
    mat = np.zeros((s, s))
    for i in range(s):
        for y in range(nt):
            mat[i, succ[i, y]] += probs[i, y]
    return mat


def evolve_reference(probs: np.ndarray, succ: np.ndarray, d0: np.ndarray, n: int) -> np.ndarray:
    """Slow reference: d_t = d_0 P^t with P formed as a dense matrix by loops."""
    mat = _dense(probs, succ)
    out = [np.asarray(d0, dtype=np.float64)]
    for _ in range(n):
        out.append(out[-1] @ mat)
    return np.array(out)


def strings_reference(probs: np.ndarray, succ: np.ndarray, d0: np.ndarray, n: int) -> np.ndarray:
    """Slow reference: probability of each of the N^n strings by walking every string from every start."""
    nt = probs.shape[1]
    out = np.zeros(nt**n)
    for idx, word in enumerate(itertools.product(range(nt), repeat=n)):
        total = 0.0
        for s0 in range(probs.shape[0]):
            if d0[s0] == 0:
                continue
            p, s = d0[s0], s0
            for y in word:
                p *= probs[s, y]
                s = succ[s, y]
            total += p
        out[idx] = total
    return out


# ---------------------------------------------------------------- greedy
def greedy_reference(f: np.ndarray) -> tuple[list[list[int]], list[int], list[int]]:
    """Slow reference: walk every orbit until it repeats. Returns (cycles, cycle_of, tail).

    Cycles as sets are listed from their smallest state in orbit order, sorted
    by smallest state, matching :func:`functional_graph`.
    """
    f = [int(x) for x in f]
    n = len(f)
    cyc_sets = {}
    cycle_head, tail = [0] * n, [0] * n
    for s in range(n):
        seen, path, x = {}, [], s
        while x not in seen:
            seen[x] = len(path)
            path.append(x)
            x = f[x]
        cyc = path[seen[x]:]
        head = min(cyc)
        cyc_sets[head] = cyc
        cycle_head[s] = head
        tail[s] = seen[x]
    heads = sorted(cyc_sets)
    cycles = []
    for h in heads:
        c, x = [h], f[h]
        while x != h:
            c.append(x)
            x = f[x]
        cycles.append(c)
    pos = {h: i for i, h in enumerate(heads)}
    return cycles, [pos[h] for h in cycle_head], tail


# ---------------------------------------------------------------- hitting
def _dense_closure(probs: np.ndarray, succ: np.ndarray, absorbing: np.ndarray):
    """(one-step matrix P, reach[i, j] = j reachable from i in >= 0 steps, rows of absorbing states cut)."""
    s = probs.shape[0]
    mat = np.zeros((s, s))
    for i in range(s):
        for y in range(probs.shape[1]):
            mat[i, succ[i, y]] += probs[i, y]
    step = (mat > 0) & ~absorbing[:, None]
    reach = step | np.eye(s, dtype=bool)
    while True:
        nxt = reach | ((reach.astype(np.int64) @ reach.astype(np.int64)) > 0)
        if (nxt == reach).all():
            return mat, reach
        reach = nxt


def hitting_times_reference(probs: np.ndarray, succ: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Slow reference: transitive closure decides finiteness, numpy.linalg.solve the rest."""
    target = np.asarray(target, dtype=bool)
    mat, reach = _dense_closure(probs, succ, target)
    reaches_t = reach[:, target].any(axis=1)
    infinite = ~target & reach[:, ~reaches_t].any(axis=1)
    k = np.where(infinite, np.inf, 0.0)
    u = np.flatnonzero(~target & ~infinite)
    if u.size:
        k[u] = np.linalg.solve(np.eye(u.size) - mat[np.ix_(u, u)], np.ones(u.size))
    return k


def committor_reference(probs: np.ndarray, succ: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Slow reference: c = 0 where B is unreachable (closure), numpy.linalg.solve on the other free states."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    mat, reach = _dense_closure(probs, succ, a | b)
    reaches_b = reach[:, b].any(axis=1)
    c = np.where(b, 1.0, 0.0)
    w = np.flatnonzero(~a & ~b & reaches_b)
    if w.size:
        rhs = mat[np.ix_(w, np.flatnonzero(b))].sum(axis=1)
        c[w] = np.linalg.solve(np.eye(w.size) - mat[np.ix_(w, w)], rhs)
    return c


# ---------------------------------------------------------------- metastable
def metastable_reference(probs: np.ndarray, succ: np.ndarray, members, cores: list) -> tuple:
    """Slow reference: (exit-time vectors per core, hitting-time vectors per core) by dense solves.

    ``cores`` are arrays of state indices (operator numbering). Returns lists of
    dicts state -> expected time.
    """
    p, members = dense_block(probs, succ, members)
    n = len(members)
    pos = {s: i for i, s in enumerate(members)}
    exits, hits = [], []
    for core in cores:
        c = [pos[int(s)] for s in core]
        tau = np.linalg.solve(np.eye(len(c)) - p[np.ix_(c, c)], np.ones(len(c)))
        exits.append({members[i]: float(t) for i, t in zip(c, tau)})
        rest = [i for i in range(n) if i not in set(c)]
        h = np.linalg.solve(np.eye(len(rest)) - p[np.ix_(rest, rest)], np.ones(len(rest))) if rest else []
        d = {members[i]: 0.0 for i in c}
        d.update({members[i]: float(t) for i, t in zip(rest, h)})
        hits.append(d)
    return exits, hits


# ---------------------------------------------------------------- mixing
def spectral_gap_reference(probs: np.ndarray, succ: np.ndarray, members) -> float:
    """Slow reference: SLEM of the class ``members`` from a loop-built dense block and numpy eigvals.

    The Perron eigenvalue is removed as the one closest to 1 (adequate on
    the well-separated test chains this oracle is meant for).
    """
    p, members = dense_block(probs, succ, members)
    n = len(members)
    if n == 1:
        return 0.0
    vals = np.linalg.eigvals(p)
    j = int(np.argmin(np.abs(vals - 1.0)))
    return float(np.max(np.abs(np.delete(vals, j))))


def tv_distance_reference(probs: np.ndarray, succ: np.ndarray, start: int, n: int, limit: np.ndarray) -> np.ndarray:
    """Slow reference: d(t) from powers of a loop-built dense matrix (tiny spaces only)."""
    s = probs.shape[0]
    p = np.zeros((s, s))
    for i in range(s):
        for y in range(probs.shape[1]):
            p[i, int(succ[i, y])] += probs[i, y]
    row = np.zeros(s)
    row[start] = 1.0
    out = []
    for _ in range(n + 1):
        out.append(0.5 * np.abs(row - limit).sum())
        row = row @ p
    return np.array(out)


# ---------------------------------------------------------------- sensitivity
def sensitivity_reference(probs: np.ndarray, succ: np.ndarray, a: int, b: int, n: int) -> np.ndarray:
    """Slow reference: D(t), t = 1..n, from a loop-built dense matrix (tiny spaces only)."""
    s = probs.shape[0]
    p = np.zeros((s, s))
    for i in range(s):
        for y in range(probs.shape[1]):
            p[i, int(succ[i, y])] += probs[i, y]
    u, v = np.zeros(s), np.zeros(s)
    u[a] = 1.0
    v[b] = 1.0
    out = []
    for _ in range(n):
        u, v = u @ p, v @ p
        out.append(0.5 * np.abs(u - v).sum())
    return np.array(out)


# ---------------------------------------------------------------- trajectories
def map_reference(probs: np.ndarray, succ: np.ndarray, start: int, n: int) -> tuple[np.ndarray, float]:
    """Slow reference: brute force over all N^n strings (log-probabilities summed right to left, like V_t).

    Returns (tokens of the lexicographically first maximiser, its log-probability).
    """
    nt = probs.shape[1]
    best_lp, best_idx = -math.inf, 0
    with np.errstate(divide="ignore"):
        lq = np.log(probs)
    for idx in range(nt**n):
        word = [int(x) for x in np.unravel_index(idx, (nt,) * n)] if n else []
        path = [start]
        for y in word:
            path.append(int(succ[path[-1], y]))
        lp = 0.0
        for t in range(n - 1, -1, -1):
            lp = lq[path[t], word[t]] + lp
        if lp > best_lp:
            best_lp, best_idx = lp, idx
    tokens = np.array(np.unravel_index(best_idx, (nt,) * n) if n else [], dtype=np.int64).ravel()
    return tokens, float(best_lp)


# ---------------------------------------------------------------- procedure
def probabilities_reference(procedure: Procedure, logits: np.ndarray) -> np.ndarray:
    """Slow, loop-based version of :meth:`Procedure.probabilities` in exact decimal arithmetic (test oracle).

    Follows the definitions in semio_jax.core.procedure's docstring token by token: weights
    exp(z_y / t) and every truncation decision (top-p's "mass strictly before y is < p", min-p's
    "q_y >= p q_max") are evaluated with 100-digit decimals from the exact values of the float
    logits, t and p; only the final probabilities are rounded to float64. No log-space tricks,
    no shift by the maximum: an independent route to the same numbers.
    """
    z = np.asarray(logits, dtype=np.float64)
    out = np.zeros_like(z)
    for idx in np.ndindex(z.shape[:-1]):
        row = z[idx]
        n = row.size
        if procedure.greedy:
            best = 0
            for y in range(n):
                if row[y] > row[best]:
                    best = y
            out[idx][best] = 1.0
            continue
        order = sorted(range(n), key=lambda y: (-row[y], y))
        kept = [y for y in order if np.isfinite(row[y])]
        if procedure.top_k is not None:
            kept = kept[: procedure.top_k]
        with decimal.localcontext() as ctx:
            ctx.prec = 100
            t = decimal.Decimal(float(procedure.temperature))
            w = {y: (decimal.Decimal(float(row[y])) / t).exp() for y in kept}
            if procedure.top_p is not None:
                p = decimal.Decimal(float(procedure.top_p))
                total = sum(w[y] for y in kept)
                new, mass = [], decimal.Decimal(0)
                for y in kept:  # kept is in descending order
                    if mass / total < p:
                        new.append(y)
                    mass += w[y]
                kept = new
            if procedure.min_p is not None:
                p = decimal.Decimal(float(procedure.min_p))
                top = max(w[y] for y in kept)
                kept = [y for y in kept if w[y] >= p * top]
            total = sum(w[y] for y in kept)
            for y in kept:
                out[idx][y] = float(w[y] / total)
    return out


# ---------------------------------------------------------------- high precision
def stationary_highprec(logits: np.ndarray, temperature: float, succ: np.ndarray, members, dps: int = 60) -> list:
    """Stationary law of a temperature-only chain in arbitrary precision (mpmath), for tests.

    q(y | s) = exp(z_y / t) / sum_j exp(z_j / t) over the finite logits of row s, from the exact
    values of the float logits and of t, evaluated with ``dps`` digits (no shift, no log
    domain), then GTH's textbook loop on the class ``members`` in the same precision. Every
    entry, however far below the float64 range, is returned as an ``mpmath.mpf``.
    """
    import mpmath

    members = [int(s) for s in members]
    pos = {s: i for i, s in enumerate(members)}
    n = len(members)
    with mpmath.workdps(dps):
        t = mpmath.mpf(float(temperature))
        a = [[mpmath.mpf(0)] * n for _ in range(n)]
        for s in members:
            w = {y: mpmath.exp(mpmath.mpf(float(logits[s, y])) / t) for y in range(logits.shape[1])
                 if np.isfinite(logits[s, y])}
            total = mpmath.fsum(w.values())
            for y, v in w.items():
                tgt = int(succ[s, y])
                if tgt in pos:
                    a[pos[s]][pos[tgt]] += v / total
        for k in range(n - 1, 0, -1):
            sk = mpmath.fsum(a[k][:k])
            for i in range(k):
                a[i][k] /= sk
            for i in range(k):
                if a[i][k]:
                    for j in range(k):
                        a[i][j] += a[i][k] * a[k][j]
        pi = [mpmath.mpf(1)] + [mpmath.mpf(0)] * (n - 1)
        for k in range(1, n):
            pi[k] = mpmath.fsum(pi[i] * a[i][k] for i in range(k))
        z = mpmath.fsum(pi)
        return [x / z for x in pi]


def closed_classes_reference(edges: dict) -> list[list[int]]:
    """Closed communicating classes of a directed graph {s: set of successors}, by plain reachability sets."""
    nodes = sorted(edges)
    reach = {}
    for s in nodes:
        seen, stack = {s}, [s]
        while stack:
            v = stack.pop()
            for w in edges[v]:
                if w not in seen:
                    seen.add(w)
                    stack.append(w)
        reach[s] = seen
    out = []
    for s in nodes:
        cls = sorted(t for t in reach[s] if s in reach[t])
        if set(reach[s]) == set(cls) and cls not in out:
            out.append(cls)
    return sorted(out)


# ---------------------------------------------------------------- zero temperature
def min_in_tree_reference(weights: np.ndarray, root: int) -> float:
    """Minimum weight of an in-tree rooted at ``root`` by enumerating every choice of one outgoing edge per
    non-root node and keeping those whose every path ends at the root (weights[i, j]: edge i -> j)."""
    w = np.asarray(weights, dtype=np.float64)
    n = w.shape[0]
    others = [i for i in range(n) if i != root]
    best = math.inf
    for choice in itertools.product(range(n), repeat=len(others)):
        parent = dict(zip(others, choice))
        if any(parent[i] == i for i in others):
            continue
        ok = True
        for i in others:  # follow the parents: the root within n steps, or a cycle
            x, steps = i, 0
            while x != root and steps <= n:
                x, steps = parent[x], steps + 1
            ok = ok and x == root
        if ok:
            best = min(best, sum(w[i, parent[i]] for i in others))
    return best


def zero_temperature_reference(logits: np.ndarray, succ: np.ndarray, num_full: int, top_k: int | None = None,
                               tie_rtol: float = 1e-9) -> dict:
    """The zero-temperature limit on the full states by brute force.

    Token by token: the allowed tokens (finite, and the top_k largest by (-z, id)), resistances
    max z - z_y, Warshall closures of the zero-resistance and support graphs, Floyd-Warshall
    path resistances, and every in-tree over the P0 classes of each closed class of the
    support. Returns a dict with classes (sorted lists), attractor, basin, resistance,
    escape, gamma (raw stochastic potentials) and potential (gamma minus the minimum of its
    closed class, ties within tie_rtol * max finite resistance set to 0).
    """
    z = np.asarray(logits, dtype=np.float64)[:num_full]
    v, n = z.shape
    r = np.full((v, v), math.inf)  # r[s, u]: resistance of the move s -> u
    for s in range(v):
        order = sorted((y for y in range(n) if math.isfinite(z[s, y])), key=lambda y: (-z[s, y], y))
        kept = order[:top_k] if top_k is not None else order
        top = max(z[s, y] for y in kept)
        for y in kept:
            r[s, int(succ[s, y])] = top - z[s, y]

    def closure(adj):
        reach = adj.copy()
        np.fill_diagonal(reach, True)
        for k in range(v):
            for i in range(v):
                if reach[i, k]:
                    for j in range(v):
                        if reach[k, j]:
                            reach[i, j] = True
        return reach

    def closed_classes(reach):
        rec = [s for s in range(v) if all(reach[u, s] for u in range(v) if reach[s, u])]
        out = []
        for s in rec:
            if not any(s in c for c in out):
                out.append(sorted(u for u in rec if reach[s, u] and reach[u, s]))
        return sorted(out)

    zreach = closure(r == 0.0)
    classes = closed_classes(zreach)
    attractors = closed_classes(closure(np.isfinite(r)))
    attractor = [next((a for a, m in enumerate(attractors) if c[0] in m), -1) for c in classes]
    basin = []
    for s in range(v):
        hit = {i for i, c in enumerate(classes) if zreach[s, c[0]]}
        basin.append(hit.pop() if len(hit) == 1 else -1)
    d = r.copy()
    np.fill_diagonal(d, 0.0)
    for k in range(v):
        for i in range(v):
            for j in range(v):
                if d[i, k] + d[k, j] < d[i, j]:
                    d[i, j] = d[i, k] + d[k, j]
    kk = len(classes)
    res = np.array([[min(d[a, b] for a in ci for b in cj) for cj in classes] for ci in classes]).reshape(kk, kk)
    np.fill_diagonal(res, 0.0)
    escape = [min([d[a, u] for a in c for u in range(v) if basin[u] != i], default=math.inf)
              for i, c in enumerate(classes)]
    gamma = [math.inf] * kk
    for a in range(len(attractors)):
        idx = [i for i in range(kk) if attractor[i] == a]
        sub = res[np.ix_(idx, idx)]
        for pos, i in enumerate(idx):
            gamma[i] = min_in_tree_reference(sub, pos)
    finite = res[np.isfinite(res)]
    tol = tie_rtol * max(float(finite.max()) if finite.size else 0.0, 1.0)
    potential = [math.inf] * kk
    for a in range(len(attractors)):
        idx = [i for i in range(kk) if attractor[i] == a]
        low = min(gamma[i] for i in idx)
        for i in idx:
            potential[i] = 0.0 if gamma[i] - low <= tol else gamma[i] - low
    return {"classes": classes, "attractor": attractor, "basin": basin, "resistance": res, "escape": escape,
            "gamma": gamma, "potential": potential}
