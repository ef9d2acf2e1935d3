"""GMRES with the greedy preconditioner (semio_jax.analysis.krylov) against power iteration, GTH and LU."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import semio_jax as sj
from semio_jax.linalg import compiled, greedy_factor, krylov
from semio_jax.analysis.greedy import functional_graph
from semio_jax.testing import operators, spaces

basins_mod = importlib.import_module("semio_jax.analysis.basins")
hitting_mod = importlib.import_module("semio_jax.analysis.hitting")


def window_operator(logits_full: np.ndarray, n: int, length: int, temperature: float) -> sj.Operator:
    """Temperature sampling from logits given for every full state (no prefix states)."""
    z = logits_full / temperature
    p = np.exp(z - z.max(axis=1, keepdims=True))
    return sj.Operator(sj.StateSpace(n, length, prefixes=False), p / p.sum(axis=1, keepdims=True))


def ngram_logits(length: int, order: int = 4, seed: int = 3, noise: float = 0.0, n: int = 2) -> np.ndarray:
    """An order-``order`` n-gram (normal logits, default_rng(seed)) read off the newest tokens,
    plus ``noise`` times independent normal logits per window (a dependence on the whole window)."""
    table = np.random.default_rng(seed).normal(size=(n**order, n))
    z = table[np.arange(n**length) % n**order]
    if noise:
        z = z + noise * np.random.default_rng(seed + 100).normal(size=z.shape)
    return z


# ------------------------------------------------------------ greedy factor
@pytest.mark.parametrize("sweep", [True, False])  # the compiled topological pass, the numpy doubling levels
@pytest.mark.parametrize("missing", [0.1, 0.8])  # 0.8: most states have no edge, the levels are sparse
@pytest.mark.parametrize("seed", range(4))
def test_greedy_factor_solves_exactly(seed, missing, sweep):
    rng = np.random.default_rng(seed)
    n = 300
    f = rng.integers(0, n, n)
    f[:5] = np.arange(5)  # self-loops
    w = rng.uniform(0.5, 0.99, n)
    w[rng.random(n) < missing] = 0.0  # no edge
    exits = 1.0 - w
    g = np.zeros((n, n))
    g[np.arange(n), f] += w
    a = np.eye(n) - g
    fac = krylov.GreedyFactor(f, w, exits, min_level_weight=0.0, sweep=sweep)
    assert fac.cyc.size == int((functional_graph(np.where(w > 0, f, np.arange(n))).on_cycle & (w > 0)).sum())
    b = rng.normal(size=n)
    np.testing.assert_allclose(a @ fac.solve_col(b), b, atol=1e-10)
    np.testing.assert_allclose(fac.solve_row(b) @ a, b, atol=1e-10)


# ------------------------------------------------- (1) slow chain, power fails
def test_krylov_meets_residual_where_power_does_not():
    """Order-4 n-gram at temperature 0.2 on 2^12 windows: power iteration needs ~8e4 steps."""
    op = window_operator(ngram_logits(12), 2, 12, 0.2)
    budget = 5000
    with pytest.raises(sj.ConvergenceError, match="power iteration did not reach"):
        sj.stationary_result(op, method="power", max_iter=budget)
    res = sj.stationary_result(op, method="krylov", tol=1e-12)
    assert res.methods == ["krylov"]
    assert res.residuals[0] <= 1e-12
    assert res.matvecs[0] < budget // 20  # both GMRES solves (pi and tau_j) together
    assert res.error_bounds[0] is not None and res.error_bounds[0] < 1e-8
    lu = sj.stationary_result(op, method="lu")
    assert np.abs(res.distributions[0] - lu.distributions[0]).sum() <= res.error_bounds[0] + lu.error_bounds[0]


def test_krylov_on_window_dependent_slow_chain():
    """Logits depending on the whole window (not lumpable to a shorter chain), temperature 0.2."""
    op = window_operator(ngram_logits(12, noise=1.0), 2, 12, 0.2)
    with pytest.raises(sj.ConvergenceError):
        sj.stationary_result(op, method="power", max_iter=2000)
    res = sj.stationary_result(op, method="krylov")
    assert res.residuals[0] <= 1e-12 and res.matvecs[0] < 300
    lu = sj.stationary_result(op, method="lu")
    err = np.abs(res.distributions[0] - lu.distributions[0]).sum()
    assert res.error_bounds[0] is not None and err <= res.error_bounds[0] + lu.error_bounds[0]


def test_auto_uses_krylov_above_lu_limit():
    """The 2^16-state order-4 n-gram model at temperature 0.25 through build_operator and auto."""
    from semio_jax.core.model import NGramModel

    rng = np.random.default_rng(3)
    model = NGramModel(rng.normal(size=(2,) * 5), context_length=16)
    op = sj.build_operator(model, sj.StateSpace(2, 16), "temperature=0.25")
    res = sj.stationary_result(op)
    assert res.methods == ["krylov"]
    assert res.residuals[0] <= 1e-12
    assert res.error_bounds[0] is not None and res.error_bounds[0] < 1e-8
    assert res.matvecs[0] < 200
    assert res.distributions[0][op.space.num_full:].sum() == 0.0  # prefix states are transient


# --------------------------------------------- (2) agreement with GTH and LU
@pytest.mark.parametrize("noise", [0.0, 1.0])
@pytest.mark.parametrize("temperature", [0.2, 0.5, 1.0])
def test_krylov_agrees_with_lu_within_bounds(noise, temperature):
    op = window_operator(ngram_logits(10, noise=noise), 2, 10, temperature)
    kr = sj.stationary_result(op, method="krylov")
    lu = sj.stationary_result(op, method="lu")
    assert kr.residuals[0] <= 1e-12
    assert kr.error_bounds[0] is not None
    err = np.abs(kr.distributions[0] - lu.distributions[0]).sum()
    assert err <= kr.error_bounds[0] + lu.error_bounds[0]
    assert kr.hitting_times[0] >= 1.0


def test_krylov_agrees_with_gth_on_several_attractors():
    """Top-k sampling with a group structure: several closed classes, each a subset of the windows."""
    n, length = 4, 5
    rng = np.random.default_rng(0)
    z = rng.normal(size=(n**length, n))
    newest = np.arange(n**length) % n
    z += 6.0 * ((np.arange(n)[None, :] // 2) == (newest[:, None] // 2))  # stay in the newest token's group
    kth = np.sort(z, axis=1)[:, -2][:, None]
    z = np.where(z >= kth, z, -np.inf)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    op = sj.Operator(sj.StateSpace(n, length, prefixes=True), np.vstack(
        [p / p.sum(axis=1, keepdims=True), np.full((sj.StateSpace(n, length).num_prefix, n), 1.0 / n)]))
    assert len(sj.attractors(op)) >= 2
    kr = sj.stationary_result(op, method="krylov")
    gth = sj.stationary_result(op, method="gth")
    for i in range(len(kr.residuals)):
        assert kr.residuals[i] <= 1e-12
        err = np.abs(kr.distributions[i] - gth.distributions[i]).sum()
        assert kr.error_bounds[i] is not None and err <= kr.error_bounds[i] + gth.error_bounds[i]


@pytest.mark.property
@settings(max_examples=40, deadline=None)
@given(operators(kind="any", spaces_strategy=spaces(max_states=200), scale=4.0))
def test_krylov_matches_gth_on_random_operators(op):
    kr = sj.stationary_result(op, method="krylov")
    ref = sj.stationary_result(op, method="gth")
    for i in range(len(kr.residuals)):
        assert kr.residuals[i] <= 1e-12
        err = np.abs(kr.distributions[i] - ref.distributions[i]).sum()
        if kr.error_bounds[i] is not None and ref.error_bounds[i] is not None:
            assert err <= kr.error_bounds[i] + ref.error_bounds[i]
        assert err <= 1e-9


# ---------------------------------------- (3) basins and hitting by GMRES
def _group_chain(n: int = 4, length: int = 5, seed: int = 0) -> sj.Operator:
    """Two groups of tokens; windows mixing both may go either way: two attractors, big basins to solve."""
    space = sj.StateSpace(n, length)
    rng = np.random.default_rng(seed)
    probs = np.zeros((space.num_states, n))
    for k, off in space.iter_groups():
        ctx = space.contexts(k).astype(np.int64)
        grp = ctx // (n // 2)
        mixed = grp.min(axis=1) != grp.max(axis=1)
        z = 2.0 * rng.random((ctx.shape[0], n))
        keep = ~(mixed & (rng.random(ctx.shape[0]) < 0.4))
        z += 4.0 * (keep[:, None] & ((np.arange(n)[None, :] // (n // 2)) == grp[:, -1:]))
        kth = np.sort(z, axis=1)[:, -2][:, None]
        z = np.where(z >= kth, z, -np.inf)
        p = np.exp(z - z.max(axis=1, keepdims=True))
        probs[off:off + ctx.shape[0]] = p / p.sum(axis=1, keepdims=True)
    return sj.Operator(space, probs)


def test_basins_hitting_committor_krylov_equal_lu(monkeypatch):
    op_lu, op_kr = _group_chain(), _group_chain()
    att = sj.attractors(op_lu)
    assert len(att) == 2
    b_lu = sj.basins_result(op_lu)
    h_lu = sj.analysis.hitting_times_result(op_lu, att[0])
    c_lu = sj.analysis.committor_result(op_lu, att[0], att[1])
    assert b_lu.n_solved > 1000
    monkeypatch.setattr(basins_mod, "KRYLOV_MIN", 0)
    monkeypatch.setattr(hitting_mod, "KRYLOV_MIN", 0)
    called = []
    real = krylov.column_solve
    monkeypatch.setattr(krylov, "column_solve", lambda *a, **k: called.append(1) or real(*a, **k))
    b_kr = sj.basins_result(op_kr)
    h_kr = sj.analysis.hitting_times_result(op_kr, att[0])
    c_kr = sj.analysis.committor_result(op_kr, att[0], att[1])
    assert len(called) >= 4  # the GMRES path really ran
    assert b_kr.n_solved == b_lu.n_solved
    assert b_kr.error_bound < 1e-11 and b_kr.max_absorption_time is not None
    assert np.max(np.abs(b_kr.probabilities - b_lu.probabilities)) <= b_kr.error_bound + b_lu.error_bound
    assert b_kr.max_row_error < 1e-12
    fin = np.isfinite(h_lu.times)
    np.testing.assert_array_equal(np.isfinite(h_kr.times), fin)
    assert np.max(np.abs(h_kr.times[fin] - h_lu.times[fin])) <= h_kr.error_bound + h_lu.error_bound
    assert np.max(np.abs(c_kr.probabilities - c_lu.probabilities)) <= c_kr.error_bound + c_lu.error_bound


@pytest.mark.slow
def test_basins_on_a_million_windows():
    """N=4, L=10 (1,048,576 windows + prefixes) under top-k=2: the absorption solve by GMRES."""
    op = _group_chain(4, 10)
    res = sj.basins_result(op)
    assert res.n_solved > basins_mod.KRYLOV_MIN
    assert res.error_bound < 1e-10
    assert res.max_row_error < 1e-10


# ------------------------------------------- auto above KRYLOV_AUTO_MAX: power first
stationary_mod = importlib.import_module("semio_jax.analysis.stationary")


def test_auto_big_class_fast_chain_power_with_certified_tau(monkeypatch):
    """A fast chain above the (lowered) auto limit: power wins the trial and GMRES certifies tau_j."""
    for name, value in (("GTH_MAX", 64), ("LU_MAX", 256), ("KRYLOV_AUTO_MAX", 512)):
        monkeypatch.setattr(stationary_mod, name, value)
    op = window_operator(np.random.default_rng(5).normal(size=(2**12, 2)), 2, 12, 1.0)
    res = sj.stationary_result(op)
    assert res.methods == ["power"]
    assert res.residuals[0] <= 1e-12
    lu = sj.stationary_result(op, method="lu")
    err = np.abs(res.distributions[0] - lu.distributions[0]).sum()
    # the certificate comes from the GMRES tau_j: within a small factor of LU's exact one, far below n-step's
    j = res.reference_states[0]
    members = np.arange(op.space.num_full)
    weak = stationary_mod.hitting_time_bound(op, members, j)
    assert res.hitting_times[0] is not None and res.hitting_times[0] < 1e-3 * weak
    assert res.error_bounds[0] is not None and err <= res.error_bounds[0] + lu.error_bounds[0]
    assert res.matvecs[0] > 0


def test_auto_big_class_slow_chain_gives_up_power_early(monkeypatch):
    """A slow chain above the (lowered) auto limit: the trial power run projects a miss and GMRES takes over."""
    for name, value in (("GTH_MAX", 64), ("LU_MAX", 256), ("KRYLOV_AUTO_MAX", 512)):
        monkeypatch.setattr(stationary_mod, name, value)
    calls = []
    real = stationary_mod._solve_power

    def spy(*a, **k):
        try:
            return real(*a, **k)
        except sj.ConvergenceError:
            calls.append("gave up")
            raise

    monkeypatch.setattr(stationary_mod, "_solve_power", spy)
    op = window_operator(ngram_logits(12), 2, 12, 0.2)
    res = sj.stationary_result(op)
    assert calls == ["gave up"] and res.methods == ["krylov"]
    assert res.residuals[0] <= 1e-12 and res.error_bounds[0] is not None


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 39), min_size=1, max_size=40))
def test_cycle_states_match_the_orbit_walk(targets):
    from semio_jax.linalg.functional_graph import cycle_states
    from semio_jax.testing.references import greedy_reference

    f = np.array([t % len(targets) for t in targets])
    on_cycle, _ = cycle_states(f)
    cycles, _, tail = greedy_reference(f)
    expect = np.zeros(f.size, dtype=bool)
    expect[[s for c in cycles for s in c]] = True
    np.testing.assert_array_equal(on_cycle, expect)
    np.testing.assert_array_equal(on_cycle, np.asarray(tail) == 0)


def test_greedy_factor_drops_only_negligible_path_weights():
    """One long tail with weights 0.5: the doubling levels stop early, and the solve is exact up to the dropped
    path weights (each below TINY_WEIGHT; they sum to at most 2 TINY_WEIGHT along a path of weights 1/2)."""
    n = 2000
    f = np.minimum(np.arange(n) + 1, n - 1)  # a path 0 -> 1 -> ... -> n-1 (a fixed point)
    w = np.full(n, 0.5)
    w[-1] = 0.0
    fac = krylov.GreedyFactor(f, w, 1.0 - w, min_level_weight=0.0, sweep=False)
    assert len(fac.levels) == 5  # 0.5^(2^5) = 2.3e-10 < 2^-30 = 9.3e-10: levels X, X^2, ..., X^16 survive
    g = np.zeros((n, n))
    g[np.arange(n - 1), f[:-1]] = 0.5
    a = np.eye(n) - g
    b = np.random.default_rng(0).normal(size=n)
    tol = 2 * greedy_factor.TINY_WEIGHT * np.abs(b).max() * 4
    np.testing.assert_allclose(a @ fac.solve_col(b), b, atol=tol)
    np.testing.assert_allclose(fac.solve_row(b) @ a, b, atol=tol)
    assert np.abs(a @ fac.solve_col(b) - b).max() > 1e-14  # the dropped terms are there (not exact to rounding)
    # by default levels whose path weights average below MIN_LEVEL_WEIGHT go too: 0.5, 0.25 are kept,
    # 0.0625 < 0.1 is not
    short = krylov.GreedyFactor(f, w, 1.0 - w, sweep=False)
    assert len(short.levels) == 2
    assert [float(wt.mean()) for _, _, wt in short.levels] == pytest.approx([0.5 * (n - 1) / n, 0.25 * (n - 2) / n])
    # the compiled sweep drops nothing: exact to rounding on the same long path
    exact = krylov.GreedyFactor(f, w, 1.0 - w, sweep=True)
    assert exact.levels == []
    np.testing.assert_allclose(a @ exact.solve_col(b), b, rtol=0, atol=1e-13)
    np.testing.assert_allclose(exact.solve_row(b) @ a, b, rtol=0, atol=1e-13)


@pytest.mark.parametrize("use_compiled", [True, False])  # numba loops, or the numpy fallback
@pytest.mark.parametrize("n,length,prefixes", [(2, 4, True), (3, 3, False), (1, 3, True), (4, 2, True)])
def test_chain_kernels_match_the_dense_off_diagonal(n, length, prefixes, use_compiled, monkeypatch):
    monkeypatch.setattr(krylov.compiled, "AVAILABLE", use_compiled)
    """push_off / pull_off / exits against the dense matrix with its diagonal removed, read from the
    successor definition; a constant window that stays with probability 1 - 1e-20 keeps its exit rate."""
    from semio_jax.testing.references import dense_block

    space = sj.StateSpace(n, length, prefixes=prefixes)
    rng = np.random.default_rng(n * 10 + length)
    p = rng.dirichlet(np.ones(n), size=space.num_states)
    if n > 1:
        p[0] = [1.0] + [1e-20 / (n - 1)] * (n - 1)  # state 0 = (0, ..., 0): a self-loop of 1 - 1e-20
    op = sj.Operator(space, p)
    dense, _ = dense_block(op.probs, space.successor_table(), range(space.num_states))
    off = dense - np.diag(np.diag(dense))
    for full_only in (False, True):
        kern = krylov.ChainKernels(op, full_only=full_only)
        k = kern.size
        v = rng.normal(size=k)
        block = off[:k, :k]
        np.testing.assert_allclose(kern.pull_off(v), block @ v, rtol=1e-13, atol=1e-300)
        np.testing.assert_allclose(kern.push_off(v), v @ block, rtol=1e-13, atol=1e-300)
        np.testing.assert_allclose(kern.exits, off[:k].sum(axis=1), rtol=1e-15, atol=0)
        # the Krylov products with the diagonal split off: e * v - v P_off + c u and e * v - P_off v
        e = off[:k].sum(axis=1)
        u = rng.random(k)
        scale = np.abs(v) @ (np.abs(block) + np.diag(e)) + np.abs(u) * 2.5 + 1e-300
        np.testing.assert_array_less(np.abs(kern.shifted_push(v, 2.5, u) - (e * v - v @ block + 2.5 * u)), 1e-13 * scale)
        np.testing.assert_array_less(np.abs(kern.shifted_push(v) - (e * v - v @ block)), 1e-13 * scale)
        scale = (np.abs(block) + np.diag(e)) @ np.abs(v) + 1e-300
        np.testing.assert_array_less(np.abs(kern.shifted_pull(v) - (e * v - block @ v)), 1e-13 * scale)
    if n > 1:
        assert kern.exits[0] == pytest.approx(1e-20, rel=1e-12)


# ------------------------------------- certified hitting times from a stationary law
def _exact_hitting_times(op, members, j):
    """E_i[steps to hit j] for i in members, in exact rationals (Gauss-Jordan on (I - Q_j) t = 1)."""
    from fractions import Fraction

    from semio_jax.testing.references import dense_block

    p, mem = dense_block(op.probs, op.space.successor_table(), members)
    others = [i for i, s in enumerate(mem) if s != j]
    n = len(others)
    a = [[Fraction(int(r == c)) - Fraction(float(p[others[r], others[c]])) for c in range(n)] + [Fraction(1)]
         for r in range(n)]
    for c in range(n):
        piv = next(r for r in range(c, n) if a[r][c] != 0)
        a[c], a[piv] = a[piv], a[c]
        inv = 1 / a[c][c]
        a[c] = [v * inv for v in a[c]]
        for r in range(n):
            if r != c and a[r][c] != 0:
                f = a[r][c]
                a[r] = [vr - f * vc for vr, vc in zip(a[r], a[c])]
    return max(float(row[n]) for row in a)


def _exact_pi(op, members):
    from fractions import Fraction

    from semio_jax.testing.references import dense_block, gth_rational

    p, mem = dense_block(op.probs, op.space.successor_table(), members)
    pi = gth_rational([[Fraction(float(x)) for x in row] for row in p])
    out = np.zeros(op.num_states)
    out[mem] = [float(x) for x in pi]
    return out


def _periodic_operator():
    """N=2, L=2, no prefixes: 01 -> 10 -> 01 deterministically (a closed class of period 2), the rest feeds it."""
    p = np.array([[0.3, 0.7], [1.0, 0.0], [0.0, 1.0], [0.6, 0.4]])
    return sj.Operator(sj.StateSpace(2, 2, prefixes=False), p)


CERT_CHAINS = {
    "ngram-slowish": lambda: window_operator(ngram_logits(4, order=3, seed=1), 2, 4, 0.5),
    "random-N3": lambda: window_operator(np.random.default_rng(2).normal(size=(9, 3)), 3, 2, 1.0),
    "periodic": _periodic_operator,
}


@pytest.mark.parametrize("name", sorted(CERT_CHAINS))
def test_hitting_time_certificate_brackets_the_exact_tau(name):
    """The deflated Richardson certificate, seeded by the exact pi, is an upper bound on the exact
    (rational) max_i E_i[T_j] and within 10% of it (so a bound of 0, or a quarter of itself, fails)."""
    op = CERT_CHAINS[name]()
    members = sj.attractors(op)[0]
    pi = _exact_pi(op, members)
    kern = krylov.ChainKernels(op, full_only=True)
    for j in (int(members[np.argmax(pi[members])]), int(members[np.argmin(pi[members])])):
        inside = np.zeros(kern.size, dtype=bool)
        inside[members] = True
        sink = np.zeros(kern.size, dtype=bool)
        sink[j] = True
        tau, steps = krylov.hitting_time_certificate(kern, inside, sink, pi[: kern.size])
        exact = _exact_hitting_times(op, members, j)
        assert tau is not None and steps > 0
        assert exact <= tau <= 1.1 * exact, (name, j, exact, tau)


@pytest.mark.parametrize("name", sorted(CERT_CHAINS))
def test_power_result_is_certified_against_the_exact_law(name):
    """method="power" now certifies with the Richardson tau_j: bound >= exact L1 error, tau_j >= exact."""
    op = CERT_CHAINS[name]()
    res = sj.stationary_result(op, method="power")
    members = sj.attractors(op)[0]
    exact = _exact_pi(op, members)
    err = np.abs(res.distribution(0) - exact).sum()
    assert res.error_bounds[0] is not None
    assert err <= res.error_bounds[0]
    assert res.hitting_times[0] >= _exact_hitting_times(op, members, res.reference_states[0])


def test_hitting_time_certificate_gives_up_on_a_slow_chain():
    """A metastable chain where Richardson would need far more steps: it says so (None) instead of guessing."""
    op = window_operator(ngram_logits(10), 2, 10, 0.1)
    members = sj.attractors(op)[0]
    kern = krylov.ChainKernels(op, full_only=True)
    pi = sj.stationary_result(op, method="lu").distribution(0)
    inside = np.zeros(kern.size, dtype=bool)
    inside[members] = True
    sink = np.zeros(kern.size, dtype=bool)
    sink[int(np.argmax(pi))] = True
    tau, steps = krylov.hitting_time_certificate(kern, inside, sink, pi, max_steps=200)
    assert tau is None and steps <= 201


@pytest.mark.parametrize("method", ["power", "krylov", "auto"])
def test_small_classes_of_a_big_space_are_solved_as_sparse_blocks(monkeypatch, method):
    """Two 32-state attractors among 1024 windows: power, krylov and auto's power-first path run on the
    class's own sparse chain (BlockKernels), and each law is certified against the exact (rational) one."""
    for name, value in (("GTH_MAX", 4), ("LU_MAX", 8), ("KRYLOV_AUTO_MAX", 8)):
        monkeypatch.setattr(stationary_mod, name, value)
    kinds = []
    real = stationary_mod._kernels
    monkeypatch.setattr(stationary_mod, "_kernels", lambda op, m: kinds.append(type(real(op, m)[0])) or real(op, m))
    op = _group_chain()
    res = sj.stationary_result(op, method=method)
    atts = sj.attractors(op)
    assert len(atts) == 2 and kinds and all(k is krylov.BlockKernels for k in kinds)
    for i, members in enumerate(atts):
        exact = _exact_pi(op, members)
        assert res.error_bounds[i] is not None
        assert np.abs(res.distribution(i) - exact).sum() <= res.error_bounds[i]
        assert res.hitting_times[i] >= _exact_hitting_times(op, members, res.reference_states[i])
        # the Krylov certificate is at most (1 + r) / (1 - r) above the exact value, r = its inf-norm residual
        slack = (1 + stationary_mod.TAU_RTOL) / (1 - stationary_mod.TAU_RTOL)
        assert res.hitting_times[i] <= slack * _exact_hitting_times(op, members, res.reference_states[i])


# ------------------------------------------------- (5) the stationary solve by either Krylov solver
@pytest.mark.parametrize("use_compiled", [True, False])
@pytest.mark.parametrize("form", ["rank_one", "reduced"])
@pytest.mark.parametrize("solver", ["bicgstab", "gmres"])
def test_stationary_krylov_solvers_agree_with_lu(solver, form, use_compiled, monkeypatch):
    monkeypatch.setattr(krylov.compiled, "AVAILABLE", use_compiled)
    op = window_operator(ngram_logits(10, noise=0.5), 2, 10, 0.3)
    members = sj.attractors(op)[0]
    pi, _, info, _ = krylov.stationary_krylov(op, members, tol=1e-12, solver=solver, form=form)
    lu = sj.stationary_result(op, method="lu")
    assert float(np.abs(op.push(pi) - pi).sum()) <= 1e-12
    assert np.abs(pi - lu.distributions[0]).sum() <= 1e-9
    with pytest.raises(ValueError, match="unknown Krylov solver"):
        krylov.stationary_krylov(op, members, solver="cg")
    with pytest.raises(ValueError, match="unknown form"):
        krylov.stationary_krylov(op, members, form="dense")


@pytest.mark.parametrize("use_compiled", [True, False])
def test_column_solve_ignores_rhs_off_the_unknowns_and_matches_a_dense_solve(use_compiled, monkeypatch):
    """(I - Q_UU) x = rhs on U, against numpy's dense solve; rhs entries off U (known states, the
    sink) must be ignored, the caller's rhs left as it was, and 1-D and 2-D right-hand sides agree."""
    from semio_jax.testing.references import dense_block

    monkeypatch.setattr(krylov.compiled, "AVAILABLE", use_compiled)
    space = sj.StateSpace(3, 4, prefixes=False)
    rng = np.random.default_rng(11)
    op = sj.Operator(space, rng.dirichlet(np.full(3, 0.5), size=space.num_states))
    kern = krylov.ChainKernels(op, full_only=True)
    dense, _ = dense_block(op.probs, space.successor_table(), range(space.num_states))
    unknown = rng.random(kern.size) < 0.8
    sink = np.zeros(kern.size, dtype=bool)
    sink[int(np.flatnonzero(unknown)[0])] = True
    u = np.flatnonzero(unknown & ~sink)
    rhs = rng.normal(size=(kern.size, 2))  # non-zero on the known states and the sink too
    kept = rhs.copy()
    want = np.linalg.solve(np.eye(u.size) - dense[np.ix_(u, u)], rhs[u])
    x2, res2, _ = krylov.column_solve(kern, unknown, rhs, rtol=1e-13, sink=sink)
    x1, res1, _ = krylov.column_solve(kern, unknown, rhs[:, 1].copy(), rtol=1e-13, sink=sink)
    np.testing.assert_array_equal(rhs, kept)
    np.testing.assert_allclose(x2[u], want, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(x1[u], want[:, 1], rtol=1e-9, atol=1e-11)
    off = np.setdiff1d(np.arange(kern.size), u)
    assert not x2[off].any() and not x1[off].any()
    assert res1 <= 1e-12 and res2 <= 1e-12
    # a right-hand side already zero off U is used in place (no copy): a strided column of a 2-D rhs,
    # and an integer one, which the solve must still read as float64; neither is modified
    on_u = np.zeros(kern.size, dtype=bool)
    on_u[u] = True
    clean = np.where(on_u[:, None], rhs, 0.0)
    kept = clean.copy()
    x2, _, _ = krylov.column_solve(kern, unknown, clean, rtol=1e-13, sink=sink)
    np.testing.assert_array_equal(clean, kept)
    np.testing.assert_allclose(x2[u], want, rtol=1e-9, atol=1e-11)
    ints = on_u.astype(np.int64)
    x1, _, _ = krylov.column_solve(kern, unknown, ints, rtol=1e-13, sink=sink)
    np.testing.assert_allclose(x1[u], np.linalg.solve(np.eye(u.size) - dense[np.ix_(u, u)], np.ones(u.size)),
                               rtol=1e-9, atol=1e-11)
    assert ints.dtype == np.int64 and (ints == on_u).all()


@pytest.mark.skipif(not krylov.compiled.AVAILABLE, reason="numba is off")
def test_kernels_greedy_factor_is_the_greedy_graph_of_the_table():
    """ChainKernels.greedy_factor (compiled.greedy_forest) against I - G built here from the table:
    G[s, succ(s, y*)] = max_y p(y|s), y* the first maximum (rows with ties included), edges kept only
    inside the mask and away from the sink; the solve is exact. (Without numba the factor's numpy
    levels drop light paths by design; test_greedy_factor_solves_exactly covers that form.)"""
    n, length = 3, 4
    space = sj.StateSpace(n, length, prefixes=False)
    rng = np.random.default_rng(4)
    p = rng.dirichlet(np.full(n, 0.3), size=space.num_full)
    p[::7] = [0.4, 0.4, 0.2]  # ties: the first maximum wins
    op = sj.Operator(space, p)
    kern = krylov.ChainKernels(op, full_only=True)
    inside = rng.random(kern.size) < 0.9
    sink = np.zeros(kern.size, dtype=bool)
    sink[int(np.flatnonzero(inside)[3])] = True
    fac = kern.greedy_factor(inside, sink)
    g = np.zeros((kern.size, kern.size))
    for s in range(kern.size):
        y = int(np.argmax(op.probs[s]))
        t = (s % n ** (length - 1)) * n + y
        if inside[s] and inside[t] and not sink[s] and not sink[t]:
            g[s, t] += op.probs[s, y]
    a = np.eye(kern.size) - g
    b = rng.normal(size=kern.size)
    np.testing.assert_allclose(a @ fac.solve_col(b), b, atol=1e-11)
    np.testing.assert_allclose(fac.solve_row(b) @ a, b, atol=1e-11)


# ------------------------------------------------------------ memory at the peak
def _fresh_with_classes(op):
    """A new Operator on the same table with its class structure and support already computed (cached
    results, not part of a solve's working memory)."""
    fresh = sj.Operator(op.space, op.probs)
    sj.class_structure(fresh)
    return fresh


@pytest.mark.skipif(not compiled.AVAILABLE, reason="the budgets are the compiled loops'; numpy's forms make temporaries")
@pytest.mark.parametrize("method,most", [("power", 4.25), ("krylov", 12.0)])
def test_stationary_solve_keeps_few_vectors(method, most):
    """Working memory of a certified solve on 2^14 windows, in vectors of the state count, numpy's
    buffers counted by tracemalloc: power iteration (two iterates, then the hitting-time certificate's
    two vectors beside pi; the off-loop row sums are added as the rows are read, 4.7 when they were
    stored) at most 4.25; Krylov (at its peak the
    certificate's solve: BiCGSTAB's six vectors and its right-hand side beside pi, the greedy factor
    and the row sums) at most 12. Before the certificate kept its weights, 1_U and A 1_U as vectors,
    pi was copied out of the solve and the residual norms made |r| temporaries, both took 14.5."""
    from helpers import traced_peak

    op = window_operator(np.random.default_rng(5).normal(size=(2**14, 2)), 2, 14, 1.0)
    sj.stationary_result(_fresh_with_classes(op), method=method)  # (numba's first-call loading)
    res, peak = traced_peak(sj.stationary_result, _fresh_with_classes(op), method=method)
    assert res.error_bounds[0] is not None and res.error_bounds[0] < 1e-6
    assert peak <= most * 8 * op.num_states, peak / (8 * op.num_states)


@pytest.mark.skipif(not compiled.AVAILABLE, reason="the budgets are the compiled loops'; numpy's forms make temporaries")
def test_hitting_time_certificate_keeps_two_vectors():
    """t and r: A 1_U is stored sparse (the sink's N predecessors), 1_U and the weights on U never."""
    from helpers import traced_peak

    op = window_operator(np.random.default_rng(5).normal(size=(2**14, 2)), 2, 14, 1.0)
    pi = sj.stationary_result(op, method="power").distribution(0)
    kern = krylov.ChainKernels(op, full_only=True)
    inside = np.ones(kern.size, dtype=bool)
    sink = np.zeros(kern.size, dtype=bool)
    sink[int(np.argmax(pi))] = True
    krylov.hitting_time_certificate(kern, inside, sink, pi)  # (numba's first-call loading)
    (tau, steps), peak = traced_peak(krylov.hitting_time_certificate, kern, inside, sink, pi)
    assert tau is not None and tau > 1.0
    assert peak <= 2.5 * 8 * kern.size, peak / (8 * kern.size)


@pytest.mark.skipif(not compiled.AVAILABLE, reason="the budgets are the compiled loops'; numpy's forms make temporaries")
def test_basins_krylov_solve_keeps_one_column_at_a_time(monkeypatch):
    """The absorption solve by Krylov works one attractor at a time: beside its result ([U, m]) it holds
    one solve's vectors (BiCGSTAB's and its right-hand side, the greedy factor, the row sums, one
    buffer), at most 12 vectors of the state count. It used to hold m right-hand sides and m
    solutions over the whole space besides (18 vectors here, with m = 2), and the answer is the same."""
    from helpers import traced_peak

    monkeypatch.setattr(basins_mod, "KRYLOV_MIN", 0)
    op0 = _group_chain(4, 7)

    def fresh():  # the exact reachability is a cached analysis of its own, not the solve's memory
        op = sj.Operator(op0.space, op0.probs)
        basins_mod._reachability(op)
        return op

    sj.basins_result(fresh())  # (numba's first-call loading)
    res, peak = traced_peak(sj.basins_result, fresh())
    size, m = op0.num_states, res.split_probabilities.shape[1]
    assert m == 2 and res.n_solved > 0.9 * size and res.error_bound < 1e-10
    assert peak - res.split_probabilities.nbytes <= 12 * 8 * size, peak / (8 * size)


def test_direct_solves_of_a_class_never_build_the_whole_matrix():
    """GTH and LU take the class's block from op.block (O(|C| N)), not by slicing op.csr, which would
    build and cache the whole operator's matrix (about three probability tables)."""
    op = window_operator(ngram_logits(10, order=3, seed=4), 2, 10, 0.7)
    for method in ("gth", "lu"):
        fresh = sj.Operator(op.space, op.probs)
        res = sj.stationary_result(fresh, method=method)
        assert res.error_bounds[0] is not None and "csr" not in fresh.__dict__


def _certificate_cases():
    """(kernels, inside, sink, dense P on the kernels' states) for the structured kernels on a whole
    space and for a sparse block (a 32-state closed class among 1024 windows)."""
    from helpers import dense_reference

    op = window_operator(np.random.default_rng(110).normal(size=(2**6, 2)), 2, 6, 1.0)
    kern = krylov.ChainKernels(op, full_only=True)
    sink = np.arange(kern.size) % 2 == 0  # every window ending in 0: each row can step into the sink
    inside = np.ones(kern.size, dtype=bool)
    yield kern, inside, sink, dense_reference(op)
    big = _group_chain()  # two 32-state closed classes among 1024 windows
    members = sj.attractors(big)[0]
    block = krylov.BlockKernels(big, members)
    sink2 = np.zeros(block.size, dtype=bool)
    sink2[5] = True
    yield block, np.ones(block.size, dtype=bool), sink2, big.block(members).toarray()


@pytest.mark.parametrize("use_compiled", [True, False])
def test_certified_max_time_is_sound_whatever_lies_off_the_rows(use_compiled, monkeypatch):
    """The M-matrix certificate against the exact max E[T] = max (I - Q)^{-1} 1: at least it, and
    within 1e-9 for the exact t; the same value whatever t_hat holds off the rows (negative, NaN, inf:
    the pull must see zeros there); None for a NaN, inf or negative t on a row; sound for half of t;
    and the same when ``out`` is t_hat itself (the pull must not overwrite what it reads)."""
    monkeypatch.setattr(compiled, "AVAILABLE", use_compiled)
    for kern, inside, sink, dense in _certificate_cases():
        rows = inside & ~sink
        q = np.where(np.outer(rows, rows), dense, 0.0)[np.ix_(rows, rows)]
        t_exact = np.zeros(kern.size)
        t_exact[rows] = np.linalg.solve(np.eye(rows.sum()) - q, np.ones(rows.sum()))
        exact = float(t_exact.max())
        tau = krylov.certified_max_time_structured(kern, inside, sink, t_exact)
        assert exact <= tau <= exact * (1 + 1e-9), (exact, tau)
        for junk in (-1e6, np.nan, np.inf):
            t = t_exact.copy()
            t[~rows] = junk
            assert krylov.certified_max_time_structured(kern, inside, sink, t) == tau
        tiny = np.where(rows, 1e-3, -1e6)  # small on the rows, hugely negative at the sink
        got = krylov.certified_max_time_structured(kern, inside, sink, tiny)
        assert got is None or got >= exact
        assert krylov.certified_max_time_structured(kern, inside, sink, 0.5 * t_exact) >= exact
        for bad in (np.nan, np.inf, -1e-3):
            t = t_exact.copy()
            t[np.flatnonzero(rows)[1]] = bad
            assert krylov.certified_max_time_structured(kern, inside, sink, t) is None
        t = t_exact.copy()
        assert krylov.certified_max_time_structured(kern, inside, sink, t, out=t) == tau
        np.testing.assert_array_equal(t, t_exact)


@pytest.mark.parametrize("use_compiled", [True, False])
def test_certified_max_time_binds_at_a_sticky_constant_window(use_compiled, monkeypatch):
    """The exit rate of a constant window (its off-loop row sum, 1 - p_ss) where the certificate is decided
    there: t_hat solves (I - Q) t = b with b = 1 at the two windows that stay put with probability 0.999 and
    2 elsewhere, so those rows bind (c = 1). Taking the whole row sum (the loop included) as the exit
    rate there would make c = 2 and certify about half the exact max E[T]."""
    from helpers import dense_reference

    space = sj.StateSpace(2, 4, prefixes=False)
    probs = np.random.default_rng(31).dirichlet(np.ones(2), size=space.num_states)
    for s, y in ((0, 0), (space.num_states - 1, 1)):  # 0000 -> 0000 and 1111 -> 1111
        probs[s, y], probs[s, 1 - y] = 0.999, 0.001
    op = sj.Operator(space, probs)
    monkeypatch.setattr(compiled, "AVAILABLE", use_compiled)
    kern = krylov.ChainKernels(op, full_only=True)
    inside = np.ones(kern.size, dtype=bool)
    sink = np.zeros(kern.size, dtype=bool)
    sink[5] = True
    rows = inside & ~sink
    a = np.eye(rows.sum()) - dense_reference(op)[np.ix_(rows, rows)]
    b = np.where(np.isin(np.flatnonzero(rows), kern.loop_states), 1.0, 2.0)
    exact = float(np.linalg.solve(a, np.ones(rows.sum())).max())
    t_hat = np.zeros(kern.size)
    t_hat[rows] = np.linalg.solve(a, b)
    tau = krylov.certified_max_time_structured(kern, inside, sink, t_hat)
    assert exact > 900 and exact <= tau <= t_hat.max() * (1 + 1e-9), (exact, tau, t_hat.max())


def test_hitting_time_certificate_ignores_weights_off_the_unknowns():
    """Only the weights on U = inside minus sink enter: a NaN or inf at the sink gives the same tau as
    pi itself (it used to make every inner product NaN and the iteration give up)."""
    op = CERT_CHAINS["random-N3"]()
    members = sj.attractors(op)[0]
    pi = _exact_pi(op, members)
    kern = krylov.ChainKernels(op, full_only=True)
    inside = np.zeros(kern.size, dtype=bool)
    inside[members] = True
    sink = np.zeros(kern.size, dtype=bool)
    j = int(members[np.argmax(pi[members])])
    sink[j] = True
    tau, _ = krylov.hitting_time_certificate(kern, inside, sink, pi[: kern.size])
    assert tau is not None
    for junk in (np.nan, np.inf):
        w = pi[: kern.size].copy()
        w[j] = junk
        assert krylov.hitting_time_certificate(kern, inside, sink, w)[0] == tau
