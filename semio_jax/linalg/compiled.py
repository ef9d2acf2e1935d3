"""Compiled loops (numba) for the products and preconditioner solves of the Krylov path.

numpy does each of these in several passes over 8 MB vectors with temporaries in
between; as one compiled loop each reads its inputs once (measured at 2^20 windows,
N = 2: the structured push 1.1 ms against 3.4 ms; an exact greedy-factor solve 2.5 ms
against 23 ms for five truncated doubling levels).

* ``push_full(t3, y, out)``: out[m N + c] = sum_a y[a M + m] t3[a, m, c] over the N^L
  full windows (t3 = the table as [N, M, N], M = N^(L-1): window a M + m moves to m N + c);
* ``pull_full(t3, x, out)``: out[a M + m] = sum_c t3[a, m, c] x[m N + c];
* ``shifted_push(t3, e, y, c, u, out)``: out <- e * y - push(y) + c u and
  ``shifted_pull(t3, e, x, out)``: out <- e * x - pull(x), the Krylov path's products with the
  diagonal split off, in one pass (the N constant windows, whose self-loop the product
  includes, are corrected by the caller);
* ``tail_order(f, w)``: the states off the cycles of the functional graph s -> f(s)
  (edges where w > 0) in topological order, every state before its image (Kahn's
  algorithm, then sorted by height and by state: the sweeps then move through memory
  nearly in order, 2x faster on a random transformer's greedy forest); the states it
  leaves out are exactly those on cycles;
* ``forest_parts(f, w)``: what the sweeps need of the weighted graph s -> f(s) (w = 0: no
  edge): its tail edges in sweep order (src, dst, wt, of f's integer type) and its cyclic states
  with their edges (cyc, f(cyc), w(cyc));
* ``greedy_forest(t2, m, usable)``: ``forest_parts`` of the greedy graph of a full-window table
  t2 [S, N] (m = S / N), s -> f(s) = (s mod m) N + argmax_y t2[s, y] with weight
  w(s) = max_y t2[s, y], an edge kept where both ends are ``usable``. One pass and int32 work
  arrays: the numpy form made about 130 MB of temporaries at 2^20 states, each page of which a
  fresh process must fault in;
* ``row_sweep(src, dst, wt, v)``: v <- v (I - X)^{-1} for X the tail edges src[i] -> dst[i]
  with weights wt[i], listed in that order, in place: v[dst[i]] += wt[i] v[src[i]] (a state's
  value is final before it is passed on). The edges are stored in sweep order (src = the
  order, dst = f[src], wt = w[src], int32 below 2^31 states), so the pass streams through
  three arrays: 2.5 ms at 2^20 against 8 ms when it looked f and w up state by state;
* ``col_sweep(src, dst, wt, x)``: x <- (I - X)^{-1} x, in place: the reverse pass,
  x[src[i]] += wt[i] x[dst[i]].

Fused vector updates of BiCGSTAB and of the shifted products (one pass where numpy takes
three to five, with a temporary each), each with its numpy form where numba is off:

* ``direction_update(p, r, v, scale, omega)``: p <- r + scale (p - omega v);
* ``step_update(x, d, alpha, r, q, rhat=None)``: x += alpha d, r -= alpha q; returns ||r||_2
  (with ``rhat``: also rhat . r, BiCGSTAB's next rho, from the same pass);
* ``dot_pair(t, r)``: (t . t, t . r);
* ``lazy_step(v, w)``: ||w - v||_1, then v <- (v + w) / 2 (power iteration's checked lazy step);
* ``shift_combine(out, e, x, c, u)``: out <- e * x - out + c u (c = 0: no u term);
* ``certify_rows(e, t, off, rows, margin)``: over the states where ``rows`` is True, the
  smallest of (e t - off) - margin (e t + off) and the largest t, and whether some t there is
  negative or not finite (the M-matrix certificate of a hitting-time bound, one pass and no
  temporaries).

The sweeps are exact to rounding (no path weight is dropped, unlike the numpy doubling
levels of :class:`semio_jax.linalg.greedy_factor.GreedyFactor`). Compiled code is cached on disk in
$SEMIO_JAX_NUMBA_CACHE or ~/.cache/semio_jax/numba (``off``: compile in memory each run);
a process then loads it instead of compiling for a second. The first call in a
process still costs about 0.3-0.4 s (numba's own start-up and the loading of every loop):
:func:`warm_up` pays it up front, as importing a compiled extension would. ``AVAILABLE`` is
False when numba is not installed or SEMIO_JAX_NUMBA=off: the callers then use numpy.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["AVAILABLE", "warm_up", "push_full", "pull_full", "shifted_push", "shifted_pull", "tail_order", "forest_parts", "greedy_forest", "row_sweep", "col_sweep", "direction_update",
           "step_update", "dot_pair", "lazy_step", "shift_combine", "certify_rows"]


def _cache_dir() -> str | None:
    where = os.environ.get("SEMIO_JAX_NUMBA_CACHE",
                           os.path.join(os.path.expanduser("~"), ".cache", "semio_jax", "numba"))
    if where.lower() in ("off", "0", "none", ""):
        return None
    try:
        os.makedirs(where, exist_ok=True)
    except OSError:
        return None  # an unwritable home: compile in memory
    return where


_CACHE = _cache_dir()
if _CACHE is not None:
    os.environ.setdefault("NUMBA_CACHE_DIR", _CACHE)  # read by numba when it is imported
try:
    import numba
except ImportError:  # pragma: no cover - numba is a dependency; this keeps a broken install usable
    numba = None
if numba is not None and _CACHE is not None and not numba.config.CACHE_DIR:
    # numba was imported before us (so it never read the variable above) and nobody chose a
    # directory: without this it would write its cache next to this source file
    numba.config.CACHE_DIR = _CACHE

AVAILABLE = numba is not None and os.environ.get("SEMIO_JAX_NUMBA", "on").lower() not in ("off", "0")


def _jit(fn):
    if numba is None:
        return fn
    return numba.njit(cache=_CACHE is not None, nogil=True)(fn)


def push_full(t3, y, out):
    """out[m N + c] = sum_a y[a M + m] t3[a, m, c] (the first N^L entries of ``out``)."""
    {2: _push2, 4: _push4}.get(t3.shape[0], _push_n)(t3, y, out)


def pull_full(t3, x, out):
    """out[a M + m] = sum_c t3[a, m, c] x[m N + c] (the first N^L entries of ``out``)."""
    {2: _pull2, 4: _pull4}.get(t3.shape[0], _pull_n)(t3, x, out)


def shifted_push(t3, e, y, c, u, out):
    {2: _shifted_push2, 4: _shifted_push4}.get(t3.shape[0], _shifted_push_n)(t3, e, y, float(c), u, out)


def shifted_pull(t3, e, x, out):
    """out[s] = e[s] x[s] - (the pull)[s]; with ``e=None``, e[s] is the row's sum, added in index order
    as :func:`row_sums` adds it (the same numbers, without an e vector to store or read)."""
    if e is None:
        {2: _shifted_pull2_rs, 4: _shifted_pull4_rs}.get(t3.shape[0], _shifted_pull_n_rs)(t3, x, out)
        return
    {2: _shifted_pull2, 4: _shifted_pull4}.get(t3.shape[0], _shifted_pull_n)(t3, e, x, out)


def row_sums(t2, out):
    """out[s] = t2[s, 0] + t2[s, 1] + ... + t2[s, N-1], added in that order (float64 [S, N] -> [S])."""
    if AVAILABLE:
        _row_sums(t2, out)
        return out
    np.copyto(out, t2[:, 0])
    for k in range(1, t2.shape[1]):
        out += t2[:, k]
    return out


@_jit
def _row_sum(t2, s):
    # the one order of addition every stored or inline row sum follows (the N = 2, 4 products spell it out)
    acc = t2[s, 0]
    for k in range(1, t2.shape[1]):
        acc += t2[s, k]
    return acc


@_jit
def _row_sums(t2, out):
    for s in range(t2.shape[0]):
        out[s] = _row_sum(t2, s)


@_jit
def _shifted_pull2_rs(t3, x, out):
    m = t3.shape[1]
    for a in range(2):
        for i in range(m):
            s = a * m + i
            p0, p1 = t3[a, i, 0], t3[a, i, 1]
            out[s] = (p0 + p1) * x[s] - (p0 * x[2 * i] + p1 * x[2 * i + 1])


@_jit
def _shifted_pull4_rs(t3, x, out):
    m = t3.shape[1]
    for a in range(4):
        for i in range(m):
            s = a * m + i
            p0, p1, p2, p3 = t3[a, i, 0], t3[a, i, 1], t3[a, i, 2], t3[a, i, 3]
            out[s] = (((p0 + p1) + p2) + p3) * x[s] - (p0 * x[4 * i] + p1 * x[4 * i + 1]
                                                        + p2 * x[4 * i + 2] + p3 * x[4 * i + 3])


@_jit
def _shifted_pull_n_rs(t3, x, out):
    n, m = t3.shape[0], t3.shape[1]
    for a in range(n):
        for i in range(m):
            s = a * m + i
            acc = 0.0
            e = t3[a, i, 0]
            for k in range(n):
                acc += t3[a, i, k] * x[i * n + k]
                if k:
                    e += t3[a, i, k]
            out[s] = e * x[s] - acc


# N = 2 and N = 4 written out: with N known to the compiler the loops run 1.5-2.5x faster than
# the general ones


@_jit
def _push2(t3, y, out):
    m = t3.shape[1]
    for i in range(m):
        a, b = y[i], y[m + i]
        out[2 * i] = a * t3[0, i, 0] + b * t3[1, i, 0]
        out[2 * i + 1] = a * t3[0, i, 1] + b * t3[1, i, 1]


@_jit
def _pull2(t3, x, out):
    m = t3.shape[1]
    for a in range(2):
        for i in range(m):
            out[a * m + i] = t3[a, i, 0] * x[2 * i] + t3[a, i, 1] * x[2 * i + 1]


@_jit
def _shifted_push2(t3, e, y, c, u, out):
    m = t3.shape[1]
    for i in range(m):
        a, b = y[i], y[m + i]
        k = 2 * i
        out[k] = e[k] * y[k] - (a * t3[0, i, 0] + b * t3[1, i, 0]) + c * u[k]
        out[k + 1] = e[k + 1] * y[k + 1] - (a * t3[0, i, 1] + b * t3[1, i, 1]) + c * u[k + 1]


@_jit
def _shifted_pull2(t3, e, x, out):
    m = t3.shape[1]
    for a in range(2):
        for i in range(m):
            s = a * m + i
            out[s] = e[s] * x[s] - (t3[a, i, 0] * x[2 * i] + t3[a, i, 1] * x[2 * i + 1])


@_jit
def _shifted_push4(t3, e, y, c, u, out):
    m = t3.shape[1]
    for i in range(m):
        a, b, d, f = y[i], y[m + i], y[2 * m + i], y[3 * m + i]
        for k in range(4):
            t = 4 * i + k
            out[t] = e[t] * y[t] - (a * t3[0, i, k] + b * t3[1, i, k] + d * t3[2, i, k] + f * t3[3, i, k]) + c * u[t]


@_jit
def _shifted_pull4(t3, e, x, out):
    m = t3.shape[1]
    for a in range(4):
        for i in range(m):
            s = a * m + i
            out[s] = e[s] * x[s] - (t3[a, i, 0] * x[4 * i] + t3[a, i, 1] * x[4 * i + 1]
                                    + t3[a, i, 2] * x[4 * i + 2] + t3[a, i, 3] * x[4 * i + 3])


@_jit
def _shifted_push_n(t3, e, y, c, u, out):
    n, m = t3.shape[0], t3.shape[1]
    for i in range(m):
        for k in range(n):
            t = i * n + k
            acc = 0.0
            for a in range(n):
                acc += y[a * m + i] * t3[a, i, k]
            out[t] = e[t] * y[t] - acc + c * u[t]


@_jit
def _shifted_pull_n(t3, e, x, out):
    n, m = t3.shape[0], t3.shape[1]
    for a in range(n):
        for i in range(m):
            s = a * m + i
            acc = 0.0
            for k in range(n):
                acc += t3[a, i, k] * x[i * n + k]
            out[s] = e[s] * x[s] - acc


@_jit
def _push4(t3, y, out):
    m = t3.shape[1]
    for i in range(m):
        a, b, c, d = y[i], y[m + i], y[2 * m + i], y[3 * m + i]
        for k in range(4):
            out[4 * i + k] = a * t3[0, i, k] + b * t3[1, i, k] + c * t3[2, i, k] + d * t3[3, i, k]


@_jit
def _pull4(t3, x, out):
    m = t3.shape[1]
    for a in range(4):
        for i in range(m):
            out[a * m + i] = (t3[a, i, 0] * x[4 * i] + t3[a, i, 1] * x[4 * i + 1]
                              + t3[a, i, 2] * x[4 * i + 2] + t3[a, i, 3] * x[4 * i + 3])


@_jit
def _push_n(t3, y, out):
    n, m = t3.shape[0], t3.shape[1]
    for i in range(m):
        base = i * n
        ya = y[i]
        for c in range(n):
            out[base + c] = ya * t3[0, i, c]
        for a in range(1, n):
            ya = y[a * m + i]
            for c in range(n):
                out[base + c] += ya * t3[a, i, c]


@_jit
def _pull_n(t3, x, out):
    n, m = t3.shape[0], t3.shape[1]
    for a in range(n):
        for i in range(m):
            acc = 0.0
            for c in range(n):
                acc += t3[a, i, c] * x[i * n + c]
            out[a * m + i] = acc


@_jit
def tail_order(f, w):
    # index arrays of f's integer type (int32 below 2^31 states: half the memory traffic)
    size = f.size
    indeg = np.zeros_like(f)
    for s in range(size):
        if w[s] > 0.0:
            indeg[f[s]] += 1
    queue = np.empty_like(f)
    height = np.zeros_like(f)  # longest path from a leaf: larger than every predecessor's
    head, tail = 0, 0
    for s in range(size):
        if indeg[s] == 0:
            queue[tail] = s
            tail += 1
    while head < tail:
        s = queue[head]
        head += 1
        if w[s] > 0.0:
            t = f[s]
            if height[t] < height[s] + 1:
                height[t] = height[s] + 1
            indeg[t] -= 1
            if indeg[t] == 0:
                queue[tail] = t
                tail += 1
    # Kahn's order is topological but scattered in memory; sorted by height, and by state within a
    # height, it stays topological and the sweeps then read and write nearly in address order
    top = 0
    for i in range(tail):
        if height[queue[i]] > top:
            top = height[queue[i]]
    start = np.zeros(top + 2, np.int64)
    for i in range(tail):
        start[height[queue[i]] + 1] += 1
    for h in range(top + 1):
        start[h + 1] += start[h]
    listed = np.zeros(size, np.bool_)
    for i in range(tail):
        listed[queue[i]] = True
    order = np.empty_like(f[:tail])
    for s in range(size):  # ascending states, each into its height's bucket
        if listed[s]:
            h = height[s]
            order[start[h]] = s
            start[h] += 1
    return order


@_jit
def greedy_forest(t2, m, usable):
    size, n = t2.shape
    f = np.empty(size, np.int32)
    w = np.zeros(size)
    for s in range(size):
        best, tok = t2[s, 0], 0
        for y in range(1, n):  # the first maximum on ties, as np.argmax
            if t2[s, y] > best:
                best, tok = t2[s, y], y
        t = (s % m) * n + tok
        f[s] = t
        if best > 0.0 and usable[s] and usable[t]:
            w[s] = best
    return forest_parts(f, w)


@_jit
def forest_parts(f, w):
    order = tail_order(f, w)
    listed = np.zeros(f.size, np.bool_)
    n_edges = 0
    for i in range(order.size):
        listed[order[i]] = True
        if w[order[i]] > 0.0:
            n_edges += 1
    src = np.empty_like(order[:n_edges])
    dst = np.empty_like(order[:n_edges])
    wt = np.empty(n_edges)
    k = 0
    for i in range(order.size):
        s = order[i]
        if w[s] > 0.0:
            src[k], dst[k], wt[k] = s, f[s], w[s]
            k += 1
    n_cyc = 0
    for s in range(f.size):
        if not listed[s] and w[s] > 0.0:
            n_cyc += 1
    cyc = np.empty(n_cyc, np.int64)
    cyc_dst = np.empty(n_cyc, np.int64)
    cyc_w = np.empty(n_cyc)
    k = 0
    for s in range(f.size):
        if not listed[s] and w[s] > 0.0:
            cyc[k], cyc_dst[k], cyc_w[k] = s, f[s], w[s]
            k += 1
    return src, dst, wt, cyc, cyc_dst, cyc_w


@_jit
def row_sweep(src, dst, wt, v):
    for i in range(src.size):
        v[dst[i]] += wt[i] * v[src[i]]


@_jit
def col_sweep(src, dst, wt, x):
    for i in range(src.size - 1, -1, -1):
        x[src[i]] += wt[i] * x[dst[i]]


# ------------------------------------------------------------------ fused vector updates
def direction_update(p, r, v, scale, omega):
    if AVAILABLE:
        _direction_update(p, r, v, scale, omega)
    else:
        p -= omega * v
        p *= scale
        p += r


def step_update(x, d, alpha, r, q, rhat=None):
    """x += alpha d; r -= alpha q in one pass: ||r||_2 after, and with ``rhat`` also (||r||_2, rhat . r)."""
    if AVAILABLE:
        if rhat is None:
            return float(np.sqrt(_step_update(x, d, alpha, r, q)))
        acc, dot = _step_update_dot(x, d, alpha, r, q, rhat)
        return float(np.sqrt(acc)), float(dot)
    x += alpha * d
    r -= alpha * q
    if rhat is None:
        return float(np.linalg.norm(r))
    return float(np.linalg.norm(r)), float(rhat @ r)


def lazy_step(v, w):
    """||w - v||_1, then v <- (v + w) / 2, in one pass (power iteration's lazy step with its residual)."""
    if AVAILABLE:
        return float(_lazy_step(v, w))
    res = float(np.abs(w - v).sum())
    v += w
    v *= 0.5
    return res


def dot_pair(t, r):
    if AVAILABLE:
        return _dot_pair(t, r)
    return float(t @ t), float(t @ r)


def shift_combine(out, e, x, c, u):
    if AVAILABLE:
        _shift_combine(out, e, x, float(c), u)
        return out
    np.subtract(e * x, out, out=out)
    if c != 0.0:
        out += c * u
    return out


def certify_rows(e, t, off, rows, margin):
    """(c, t_max, bad) over ``rows``: c = min (e t - off) - margin (e t + off), t_max = max t, bad = some t
    there is negative or not finite (then c and t_max mean nothing). No rows: (inf, -inf, False)."""
    if AVAILABLE:
        c, tmax, bad = _certify_rows(e, t, off, rows, float(margin))
        return float(c), float(tmax), bool(bad)
    tr, d, o = t[rows], e[rows] * t[rows], off[rows]
    if not tr.size:
        return float("inf"), float("-inf"), False
    if not (np.all(np.isfinite(tr)) and tr.min() >= 0):
        return float("nan"), float("nan"), True
    return float(np.min((d - o) - margin * (d + o))), float(tr.max()), False


def certify_rows_table(t2, loop_states, loop_exits, t, off, rows, margin):
    """:func:`certify_rows` with e[s] the sum of row s of ``t2`` (as :func:`row_sums` adds it), except at the
    sorted ``loop_states``, where it is ``loop_exits`` (the off-loop sums): no e vector is stored."""
    if np.any(loop_states[1:] <= loop_states[:-1]):  # the compiled pass finds them in one ascending sweep
        raise ValueError("certify_rows_table: loop_states must be strictly increasing")
    if AVAILABLE:
        c, tmax, bad = _certify_rows_table(t2, loop_states, loop_exits, t, off, rows, float(margin))
        return float(c), float(tmax), bool(bad)
    e = row_sums(t2, np.empty(t2.shape[0]))
    e[loop_states] = loop_exits
    return certify_rows(e, t, off, rows, margin)


@_jit
def _certify_rows_table(t2, loop_states, loop_exits, t, off, rows, margin):
    c, tmax, bad = np.inf, -np.inf, False
    j = 0
    for i in range(t.size):
        while j < loop_states.size and loop_states[j] < i:
            j += 1
        if rows[i]:
            ei = loop_exits[j] if j < loop_states.size and loop_states[j] == i else _row_sum(t2, i)
            c, tmax, bad = _certify_row(ei, t[i], off[i], margin, c, tmax, bad)
    return c, tmax, bad


@_jit
def _certify_rows(e, t, off, rows, margin):
    c, tmax, bad = np.inf, -np.inf, False
    for i in range(t.size):
        if rows[i]:
            c, tmax, bad = _certify_row(e[i], t[i], off[i], margin, c, tmax, bad)
    return c, tmax, bad


@_jit
def _certify_row(ei, ti, oi, margin, c, tmax, bad):
    # one row of the certificate folded into (c, tmax, bad)
    if not (ti >= 0.0 and ti < np.inf):
        bad = True
    d = ei * ti
    low = (d - oi) - margin * (d + oi)
    if low < c:
        c = low
    if ti > tmax:
        tmax = ti
    return c, tmax, bad


@_jit
def _direction_update(p, r, v, scale, omega):
    for i in range(p.size):
        p[i] = r[i] + scale * (p[i] - omega * v[i])


@_jit
def _step_update(x, d, alpha, r, q):
    acc = 0.0
    for i in range(x.size):
        x[i] += alpha * d[i]
        ri = r[i] - alpha * q[i]
        r[i] = ri
        acc += ri * ri
    return acc


@_jit
def _step_update_dot(x, d, alpha, r, q, rhat):
    acc, dot = 0.0, 0.0
    for i in range(x.size):
        x[i] += alpha * d[i]
        ri = r[i] - alpha * q[i]
        r[i] = ri
        acc += ri * ri
        dot += rhat[i] * ri
    return acc, dot


@_jit
def _lazy_step(v, w):
    acc = 0.0
    for i in range(v.size):
        acc += abs(w[i] - v[i])
        v[i] = 0.5 * (v[i] + w[i])
    return acc


@_jit
def _dot_pair(t, r):
    tt, tr = 0.0, 0.0
    for i in range(t.size):
        tt += t[i] * t[i]
        tr += t[i] * r[i]
    return tt, tr


@_jit
def _shift_combine(out, e, x, c, u):
    for i in range(out.size):
        out[i] = e[i] * x[i] - out[i] + c * u[i]


def warm_up() -> None:
    """Load (or compile) every loop now, for the argument types the Krylov path uses."""
    if not AVAILABLE:
        return
    v = np.zeros(4)
    for writable in (True, False):  # an Operator's table is read-only: numba types that apart
        z2, z4 = np.zeros((2, 2, 2)), np.zeros((4, 1, 4))
        for z in (z2, z4):
            z.setflags(write=writable)
            push_full(z, v, v.copy())
            pull_full(z, v, v.copy())
            shifted_push(z, v, v, 1.0, v, v.copy())
            shifted_pull(z, v, v, v.copy())
            shifted_pull(z, None, v, v.copy())
    tail_order(np.arange(4, dtype=np.int64), v)
    tail_order(np.arange(4, dtype=np.int32), v)
    forest_parts(np.arange(4, dtype=np.int32), v)
    for writable in (True, False):
        t2 = np.full((4, 2), 0.5)
        t2.setflags(write=writable)
        greedy_forest(t2, 2, np.ones(4, np.bool_))
        row_sums(t2, np.empty(4))
        certify_rows_table(t2, np.zeros(1, np.int64), np.zeros(1), v, v, np.ones(4, np.bool_), 1e-15)
    for idx in (np.int32, np.int64):
        e = np.zeros(1, dtype=idx)
        row_sweep(e, e, np.zeros(1), v.copy())
        col_sweep(e, e, np.zeros(1), v.copy())
    direction_update(v.copy(), v, v, 1.0, 1.0)
    step_update(v.copy(), v, 1.0, v.copy(), v)
    step_update(v.copy(), v, 1.0, v.copy(), v, v)
    dot_pair(v, v)
    lazy_step(v.copy(), v)
    shift_combine(v.copy(), v, v, 1.0, v)
    certify_rows(v, v, v, np.ones(4, np.bool_), 1e-15)
