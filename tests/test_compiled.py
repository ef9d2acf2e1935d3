"""The compiled loops (semio_jax.linalg.compiled) against numpy and dense references."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from semio_jax.linalg import compiled
from semio_jax.linalg.functional_graph import cycle_states


@pytest.mark.parametrize("n,length", [(1, 3), (2, 5), (3, 3), (4, 3)])
def test_push_and_pull_match_einsum(n, length):
    rng = np.random.default_rng(n * 7 + length)
    nf = n**length
    t3 = rng.random((n, nf // n, n))
    y = rng.normal(size=nf)
    out = np.full(nf, np.nan)
    compiled.push_full(t3, y, out)
    np.testing.assert_allclose(out, np.einsum("am,amy->my", y.reshape(n, -1), t3).ravel(), rtol=1e-14, atol=1e-14)
    compiled.pull_full(t3, y, out)
    np.testing.assert_allclose(out, np.einsum("amy,my->am", t3, y.reshape(-1, n)).ravel(), rtol=1e-14, atol=1e-14)
    # the same products from the dense matrix of the shift map: window s = a M + m moves to m N + c
    dense = np.zeros((nf, nf))
    m = nf // n
    for a in range(n):
        for i in range(m):
            dense[a * m + i, i * n + np.arange(n)] += t3[a, i]
    compiled.push_full(t3, y, out)
    np.testing.assert_allclose(out, y @ dense, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("seed", range(5))
def test_tail_order_is_topological_and_leaves_out_exactly_the_cycles(seed):
    rng = np.random.default_rng(seed)
    size = 400
    f = rng.integers(0, size, size)
    w = rng.uniform(0.1, 0.9, size) * (rng.random(size) < 0.85)
    order = compiled.tail_order(f, w)
    f_eff = np.where(w > 0, f, np.arange(size))
    on_cycle, _ = cycle_states(f_eff)
    on_cycle &= w > 0  # a state without an edge is a fixed point of f_eff but on no cycle of the graph
    assert np.array_equal(np.sort(order), np.flatnonzero(~on_cycle))
    pos = np.empty(size, dtype=np.int64)
    pos[order] = np.arange(order.size)
    edge = (w[order] > 0) & ~on_cycle[f[order]]
    assert (pos[order[edge]] < pos[f[order[edge]]]).all()  # every state before its image


@pytest.mark.parametrize("seed", range(3))
def test_sweeps_solve_the_tail_system_exactly(seed):
    rng = np.random.default_rng(seed)
    size = 300
    f = rng.integers(0, size, size)
    w = rng.uniform(0.5, 0.99, size) * (rng.random(size) < 0.9)
    order = compiled.tail_order(f, w)
    x_mat = np.zeros((size, size))  # X: the tail edges only
    x_mat[order, f[order]] = w[order]
    a = np.eye(size) - x_mat
    b = rng.normal(size=size)
    src = order[w[order] > 0]
    v = b.copy()
    compiled.row_sweep(src, f[src], w[src], v)
    np.testing.assert_allclose(v @ a, b, atol=1e-12)
    x = b.copy()
    compiled.col_sweep(src.astype(np.int32), f[src].astype(np.int32), w[src], x)
    np.testing.assert_allclose(a @ x, b, atol=1e-12)


@pytest.mark.parametrize("use_compiled", [True, False])
def test_fused_updates_match_their_numpy_forms(use_compiled, monkeypatch):
    monkeypatch.setattr(compiled, "AVAILABLE", use_compiled)
    rng = np.random.default_rng(5)
    p, r, v, x, d, q, e, u = (rng.normal(size=1000) for _ in range(8))
    p2 = p.copy()
    compiled.direction_update(p2, r, v, 0.7, 0.3)
    np.testing.assert_allclose(p2, r + 0.7 * (p - 0.3 * v), rtol=1e-14, atol=1e-14)
    x2, r2 = x.copy(), r.copy()
    norm = compiled.step_update(x2, d, 0.4, r2, q)
    np.testing.assert_allclose(x2, x + 0.4 * d, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(r2, r - 0.4 * q, rtol=1e-14, atol=1e-14)
    assert norm == pytest.approx(np.linalg.norm(r - 0.4 * q), rel=1e-13)
    x3, r3 = x.copy(), r.copy()
    norm3, dot3 = compiled.step_update(x3, d, 0.4, r3, q, u)
    np.testing.assert_allclose(r3, r - 0.4 * q, rtol=1e-14, atol=1e-14)
    assert norm3 == pytest.approx(norm, rel=1e-13) and dot3 == pytest.approx(u @ (r - 0.4 * q), rel=1e-12)
    v3 = v.copy()
    res = compiled.lazy_step(v3, x)
    assert res == pytest.approx(np.abs(x - v).sum(), rel=1e-13)
    np.testing.assert_array_equal(v3, (v + x) * 0.5)
    tt, tr = compiled.dot_pair(d, q)
    assert tt == pytest.approx(d @ d, rel=1e-13) and tr == pytest.approx(d @ q, rel=1e-12)
    out = q.copy()
    compiled.shift_combine(out, e, x, 2.5, u)
    np.testing.assert_allclose(out, e * x - q + 2.5 * u, rtol=1e-13, atol=1e-13)


def test_warm_up_loads_every_loop_without_error():
    compiled.warm_up()  # the same calls the Krylov path makes, on tiny arrays; must not raise
    if compiled.AVAILABLE:
        for fn in (compiled._push2, compiled._pull2, compiled.row_sweep, compiled.col_sweep, compiled.tail_order):
            assert fn.signatures, fn  # numba has a compiled version for at least one signature


@pytest.mark.skipif(not compiled.AVAILABLE, reason="numba is off")
def test_warm_up_covers_read_only_tables():
    # an Operator's table is read-only, which numba types apart from a writable one: a signature
    # missing from warm_up is loaded (or compiled) inside the first timed solve
    compiled.warm_up()
    table = np.random.default_rng(0).random((2, 4, 2))
    table.setflags(write=False)
    v = np.ones(8)
    loops = (compiled._push2, compiled._pull2, compiled._shifted_push2, compiled._shifted_pull2)
    before = [len(fn.signatures) for fn in loops]
    compiled.push_full(table, v, np.empty(8))
    compiled.pull_full(table, v, np.empty(8))
    compiled.shifted_push(table, v, v, 1.0, v, np.empty(8))
    compiled.shifted_pull(table, v, v, np.empty(8))
    assert [len(fn.signatures) for fn in loops] == before


@pytest.mark.skipif(not compiled.AVAILABLE, reason="numba is off")
def test_cache_goes_to_its_directory_even_when_numba_was_imported_first(tmp_path):
    # numba reads NUMBA_CACHE_DIR only when it is imported; a user who imported it before semio_jax
    # must not get cache files written next to the package's source
    code = ("import numba, numpy as np\n"
            "from semio_jax.linalg import compiled\n"
            "compiled.lazy_step(np.zeros(3), np.ones(3))\n")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["SEMIO_JAX_NUMBA_CACHE"] = str(tmp_path / "cache")
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=300)
    assert any(p.suffix == ".nbi" for p in (tmp_path / "cache").rglob("*"))


@pytest.mark.parametrize("use_compiled", [True, False])
def test_certify_rows_matches_its_definition(use_compiled, monkeypatch):
    """min over the rows of (e t - off) - margin (e t + off), max t, and the bad-entry flag, against the
    masked numpy expressions; rows outside the mask (here with NaN and -1 in t) are ignored."""
    monkeypatch.setattr(compiled, "AVAILABLE", use_compiled)
    rng = np.random.default_rng(11)
    e, t, off = rng.random(500), rng.random(500) * 10, rng.random(500)
    rows = rng.random(500) < 0.7
    t[np.flatnonzero(~rows)[:2]] = [np.nan, -1.0]
    c, tmax, bad = compiled.certify_rows(e, t, off, rows, 1e-3)
    d = e[rows] * t[rows]
    assert c == pytest.approx(np.min((d - off[rows]) - 1e-3 * (d + off[rows])), rel=1e-14)
    assert tmax == np.max(t[rows]) and not bad
    for poison in (-0.5, np.nan, np.inf):
        t2 = t.copy()
        t2[np.flatnonzero(rows)[3]] = poison
        assert compiled.certify_rows(e, t2, off, rows, 1e-3)[2]
    assert compiled.certify_rows(e, t, off, np.zeros(500, bool), 1e-3) == (np.inf, -np.inf, False)


@pytest.mark.parametrize("n,length", [(1, 3), (2, 6), (3, 4), (4, 4), (5, 3)])
@pytest.mark.parametrize("use_compiled", [True, False])
def test_row_sums_added_inline_are_the_stored_ones(n, length, use_compiled, monkeypatch):
    """The column product and the certificate that add each row's sum as they read it (no exits vector)
    give bit for bit what the stored sums give: row_sums adds in index order, as the kernels do. The
    entries span many binades, so another order of addition would round differently somewhere."""
    rng = np.random.default_rng(n * 10 + length)
    nf = n**length
    t3 = rng.random((n, nf // n, n)) ** 6  # [a, m, y]
    t2 = t3.reshape(nf, n)
    ref = t2[:, 0].copy()
    for k in range(1, n):
        ref += t2[:, k]
    monkeypatch.setattr(compiled, "AVAILABLE", use_compiled)
    e = compiled.row_sums(t2, np.empty(nf))
    np.testing.assert_array_equal(e, ref)
    x = rng.normal(size=nf)
    inline, stored = np.empty(nf), np.empty(nf)
    monkeypatch.setattr(compiled, "AVAILABLE", True)  # (the e=None product runs compiled or as plain Python)
    compiled.shifted_pull(t3, None, x, inline)
    compiled.shifted_pull(t3, e, x, stored)
    np.testing.assert_array_equal(inline, stored)
    # the certificate: at the constant windows e is the off-loop sum, passed apart
    ones = sum(n**i for i in range(length))
    loops = np.arange(n, dtype=np.int64) * ones if nf > 1 else np.zeros(1, dtype=np.int64)
    loop_exits = rng.random(loops.size)
    e_loops = e.copy()
    e_loops[loops] = loop_exits
    t, off = rng.random(nf) * 100, rng.random(nf)
    rows = rng.random(nf) < 0.8
    rows[loops] = True
    off[loops] += 200.0  # the minimum sits at a constant window: its e must be the one passed apart
    monkeypatch.setattr(compiled, "AVAILABLE", use_compiled)
    got = compiled.certify_rows_table(t2, loops, loop_exits, t, off, rows, 1e-3)
    assert got == compiled.certify_rows(e_loops, t, off, rows, 1e-3)
    assert got[0] != compiled.certify_rows(e, t, off, rows, 1e-3)[0]


@pytest.mark.parametrize("use_compiled", [True, False])
def test_certify_rows_table_refuses_unsorted_loop_states(use_compiled, monkeypatch):
    """The compiled pass finds the loop states in one ascending sweep: given out of order it would read
    state 0's e as its whole row sum (0.99 of it the loop) and certify 10x too small a bound (c = 10
    instead of 1 here), so unsorted loop states are refused."""
    monkeypatch.setattr(compiled, "AVAILABLE", use_compiled)
    t2 = np.array([[0.99, 0.01], [0.01, 0.99]])  # both states stay with probability 0.99
    t, off, rows = np.array([100.0, 1000.0]), np.zeros(2), np.ones(2, bool)
    with pytest.raises(ValueError, match="strictly increasing"):
        compiled.certify_rows_table(t2, np.array([1, 0]), np.array([0.01, 0.01]), t, off, rows, 1e-15)
    c, tmax, bad = compiled.certify_rows_table(t2, np.array([0, 1]), np.array([0.01, 0.01]), t, off, rows, 1e-15)
    assert c == pytest.approx(1.0, rel=1e-12) and tmax == 1000.0 and not bad
