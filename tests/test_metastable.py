"""Metastable sets, coarse-grained dynamics, exit and passage times (semio_jax.analysis.metastable)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import semio_jax as sj
from semio_jax.testing import references
from semio_jax.agreement import check_metastable
from semio_jax.analysis import metastable as ms


def block_chain(sizes, eps, seed=0, lumpable=True):
    """A chain on sum(sizes) tokens: inside block a the law is random; block a moves to block b with
    total probability eps[a][b] (split over b's tokens at random). Lumpable when every state of block a
    uses the same eps row (always here); ``lumpable=False`` perturbs the per-state cross mass."""
    rng = np.random.default_rng(seed)
    n = sum(sizes)
    starts = np.cumsum([0] + list(sizes))
    p = np.zeros((n, n))
    for a in range(len(sizes)):
        for i in range(starts[a], starts[a + 1]):
            out = 0.0
            for b in range(len(sizes)):
                if b == a:
                    continue
                e = eps[a][b] * (rng.uniform(0.5, 1.5) if not lumpable else 1.0)
                w = rng.random(sizes[b]) + 0.2
                p[i, starts[b]:starts[b + 1]] = e * w / w.sum()
                out += e
            w = rng.random(sizes[a]) + 0.2
            p[i, starts[a]:starts[a + 1]] = (1 - out) * w / w.sum()
    return p, starts


def lumped(p, starts):
    k = len(starts) - 1
    out = np.zeros((k, k))
    for a in range(k):
        i = starts[a]  # lumpable: every row of the block gives the same block sums
        for b in range(k):
            out[a, b] = p[i, starts[b]:starts[b + 1]].sum()
    return out


def mfpt_dense(q):
    """Mean first-passage times of a small chain: m[i, j] = E_i[steps to hit j] (0 on the diagonal)."""
    k = q.shape[0]
    m = np.zeros((k, k))
    for j in range(k):
        rest = [i for i in range(k) if i != j]
        h = np.linalg.solve(np.eye(k - 1) - q[np.ix_(rest, rest)], np.ones(k - 1))
        m[rest, j] = h
    return m


EPS3 = [[0, 0.01, 0.02], [0.005, 0, 0.01], [0.02, 0.03, 0]]


@pytest.fixture(scope="module")
def lumpable3():
    p, starts = block_chain([3, 4, 2], EPS3, seed=1)
    return sj.Operator(sj.StateSpace(9, 1), p), p, starts


def test_lumpable_three_blocks_exact_answer(lumpable3):
    op, p, starts = lumpable3
    r = ms.metastable_sets(op)
    assert r.k == 3 and r.method == "schur" and r.crispness == pytest.approx(1.0, abs=1e-9)
    blocks = np.repeat(np.arange(3), np.diff(starts))
    # memberships are the block indicators (the leading right eigenvectors are block-constant)
    np.testing.assert_allclose(r.memberships, np.eye(3)[blocks], atol=1e-9)
    np.testing.assert_allclose(r.memberships.sum(axis=1), 1.0, atol=1e-14)
    q = lumped(p, starts)
    np.testing.assert_allclose(r.coarse, q, atol=1e-10)
    pi = sj.stationary(op)[0]
    np.testing.assert_allclose(r.mass, [pi[starts[a]:starts[a + 1]].sum() for a in range(3)], atol=1e-12)
    np.testing.assert_allclose(r.exit_times, 1.0 / (1.0 - np.diag(q)), rtol=1e-9)
    np.testing.assert_allclose(r.mfpt, mfpt_dense(q), rtol=1e-9)
    assert [c.tolist() for c in r.cores] == [list(range(starts[a], starts[a + 1])) for a in range(3)]
    np.testing.assert_allclose(np.sort(np.real(r.eigenvalues[:3])), np.sort(np.real(np.linalg.eigvals(q))),
                               atol=1e-10)


def test_nearly_decomposable_matches_dense_reference():
    p, starts = block_chain([4, 5], [[0, 0.004], [0.002, 0]], seed=3, lumpable=False)
    op = sj.Operator(sj.StateSpace(9, 1), p)
    r = ms.metastable_sets(op)
    assert r.k == 2
    blocks = np.repeat(np.arange(2), np.diff(starts))
    assert np.abs(r.memberships - np.eye(2)[blocks]).max() < 0.05  # O(eps) fuzziness
    assert (r.memberships >= 0).all()
    exits, hits = references.metastable_reference(op.probs, op.successors, r.states, r.cores)
    for j, core in enumerate(r.cores):
        w = r.pi[core] / r.pi[core].sum()
        assert r.exit_times[j] == pytest.approx(sum(w[i] * exits[j][int(s)] for i, s in enumerate(core)), rel=1e-10)
        other = r.cores[1 - j]
        wo = r.pi[other] / r.pi[other].sum()
        assert r.mfpt[1 - j, j] == pytest.approx(sum(wo[i] * hits[j][int(s)] for i, s in enumerate(other)), rel=1e-10)
    # the coarse matrix is row-stochastic with stationary vector = the masses
    np.testing.assert_allclose(r.coarse.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(r.mass @ r.coarse, r.mass, atol=1e-12)
    assert r.exit_times.min() > 100  # metastable: ~1/eps


def test_arnoldi_path_matches_schur(lumpable3, monkeypatch):
    op, _, _ = lumpable3
    dense = ms.metastable_sets(op)
    monkeypatch.setattr(ms, "DENSE_MAX", 4)
    sparse = ms.metastable_sets(sj.Operator(op.space, op.probs))
    assert sparse.method == "arnoldi" and sparse.k == dense.k
    np.testing.assert_allclose(sparse.memberships, dense.memberships, atol=1e-8)
    np.testing.assert_allclose(sparse.exit_times, dense.exit_times, rtol=1e-8)


@pytest.fixture(scope="module")
def sticky_model():
    """N=4, order 1: tokens {0,1} and {2,3} form two blocks, crossing costs logit -4."""
    rng = np.random.default_rng(5)
    lg = np.full((4, 4), -4.0)
    lg[:2, :2] = rng.normal(size=(2, 2))
    lg[2:, 2:] = rng.normal(size=(2, 2))
    return sj.NGramModel(lg, name="two-blocks")


def test_ngram_model_sets_follow_the_last_token(sticky_model):
    op = sj.build_operator(sticky_model, sj.StateSpace(4, 3))
    r = ms.metastable_sets(op)
    assert r.k == 2
    last = r.states % 4
    block = (last >= 2).astype(int)
    assert (r.crisp == block).all() or (r.crisp == 1 - block).all()
    # the cores are the whole blocks, so each exit time lies between 1/max and 1/min of the crossing probability
    q = op.probs[: op.space.num_full]
    exits, _ = references.metastable_reference(op.probs, op.successors, r.states, r.cores)
    for j, core in enumerate(r.cores):
        assert core.size == 32
        cross = np.where(core % 4 >= 2, q[core, :2].sum(axis=1), q[core, 2:].sum(axis=1))
        assert 1 / cross.max() - 1e-9 <= r.exit_times[j] <= 1 / cross.min() + 1e-9
        w = r.pi[np.searchsorted(r.states, core)]
        ref = sum(wi * exits[j][int(s)] for wi, s in zip(w / w.sum(), core))
        assert r.exit_times[j] == pytest.approx(ref, rel=1e-10)
    assert r.negativity > -1e-8


def test_explicit_k_and_errors(lumpable3):
    op, _, _ = lumpable3
    r2 = ms.metastable_sets(op, k=2)
    assert r2.k == 2 and r2.memberships.shape == (9, 2)
    np.testing.assert_allclose(r2.memberships.sum(axis=1), 1.0, atol=1e-12)
    with pytest.raises(ValueError, match="threshold"):
        ms.metastable_sets(op, threshold=0.4)
    rng = np.random.default_rng(0)
    table = rng.normal(size=(4, 4))
    table[:2, 2:] = -np.inf
    table[2:, :2] = -np.inf
    two = sj.build_operator(sj.NGramModel(table), sj.StateSpace(4, 2))
    with pytest.raises(ValueError, match="attractor"):
        ms.metastable_sets(two)
    r = ms.metastable_sets(two, attractor=1, k=2)
    assert r.attractor == 1 and set(r.states.tolist()) == set(sj.attractors(two)[1].tolist())


def test_fast_mixing_chain_has_no_metastability():
    rng = np.random.default_rng(3)
    w = rng.random((5, 5)) + 0.5
    w = w + w.T  # symmetric weights: a reversible chain, real eigenvalues
    op = sj.Operator(sj.StateSpace(5, 1), w / w.sum(axis=1, keepdims=True))
    r = ms.metastable_sets(op)
    assert r.k == 1 and "no metastability" in r.note
    np.testing.assert_allclose(r.memberships, 1.0)
    assert r.exit_times[0] == np.inf and r.crispness == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no metastable sets"):
        check_metastable(op, None, result=r)
    forced = ms.metastable_sets(op, k=2)
    assert forced.k == 2 and forced.crispness < 1.0


def test_gth_absorbing_solver():
    rng = np.random.default_rng(2)
    q = rng.random((6, 6))
    exits = rng.random(6) * 0.3
    q = q / q.sum(axis=1, keepdims=True) * (1 - exits)[:, None]
    b = rng.random(6)
    np.testing.assert_allclose(ms.gth_absorbing(q, exits, b), np.linalg.solve(np.eye(6) - q, b), rtol=1e-12)
    # leaving is astronomically unlikely: 1 - 1e-20 rounds to 1, an LU solve of I - Q would be singular
    eps = 1e-20
    x = ms.gth_absorbing(np.array([[0.0, 1.0], [1.0 - eps, 0.0]]), np.array([0.0, eps]), np.ones(2))
    np.testing.assert_allclose(x, [2 / eps, (2 - eps) / eps], rtol=1e-14)


def test_inner_simplex_on_a_known_simplex():
    rng = np.random.default_rng(0)
    chi_true = rng.dirichlet([0.3, 0.3, 0.3], size=40)
    chi_true[:3] = np.eye(3)  # the vertices are present
    basis = np.column_stack([np.ones(3), rng.normal(size=(3, 2))])  # any invertible map with first column 1
    x = chi_true @ basis
    chi, vertices = ms.inner_simplex(x)
    np.testing.assert_allclose(np.sort(chi, axis=1), np.sort(chi_true, axis=1), atol=1e-10)
    assert sorted(vertices.tolist()) == [0, 1, 2]


# ------------------------------------------------------------------ properties
@pytest.mark.property
@given(sizes=st.lists(st.integers(1, 4), min_size=2, max_size=3), seed=st.integers(0, 2**31 - 1),
       eps=st.floats(1e-4, 2e-2), lumpable=st.booleans())
def test_property_memberships_and_coarse_matrix(sizes, seed, eps, lumpable):
    k = len(sizes)
    e = [[0 if a == b else eps for b in range(k)] for a in range(k)]
    p, starts = block_chain(sizes, e, seed=seed, lumpable=lumpable)
    op = sj.Operator(sj.StateSpace(sum(sizes), 1), p)
    r = ms.metastable_sets(op, k=k)
    chi = r.memberships
    assert chi.shape == (sum(sizes), k)
    assert (chi >= 0).all()
    np.testing.assert_allclose(chi.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(r.mass.sum(), 1.0, atol=1e-12)
    assert (r.coarse >= -1e-15).all()
    np.testing.assert_allclose(r.coarse.sum(axis=1), 1.0, atol=1e-10)
    np.testing.assert_allclose(r.mass @ r.coarse, r.mass, atol=1e-10)
    assert all(c.size >= 1 for c in r.cores)
    assert (r.exit_times >= 1.0 - 1e-12).all() and (r.exit_times <= r.exit_times_max + 1e-9).all()
    assert 0 < r.crispness <= 1 + 1e-12
    blocks = np.repeat(np.arange(k), np.diff(starts))
    if lumpable:  # the exact answer is known: crisp block indicators (up to the order of the sets)
        assert chi.max(axis=1).min() > 1 - 1e-6
        for a in range(k):
            assert len(set(r.crisp[blocks == a].tolist())) == 1
        assert len(set(r.crisp.tolist())) == k


# ------------------------------------------------------------------ agreement
def test_check_metastable_passes_for_the_right_operator_and_fails_for_a_wrong_one(sticky_model):
    op = sj.build_operator(sticky_model, sj.StateSpace(4, 2))
    good = check_metastable(op, sticky_model, n_chains=500, seed=0)
    assert good.passed, good.table()
    assert good.settings["censored"] == [0] * len(good.rows)
    wrong = check_metastable(op.with_procedure("temperature=1.3"), sticky_model, n_chains=500, seed=0,
                             procedure="temperature=1")
    assert wrong.failed, wrong.table()


def test_check_metastable_with_partial_cores():
    """Three blocks with fuzzy borders: passage rows (to another core) differ from exit rows."""
    p, _ = block_chain([3, 3], [[0, 0.02], [0.02, 0]], seed=11, lumpable=False)
    # make token 2 a 'border' state: half its mass goes to the other block
    p[2] = np.array([0.2, 0.1, 0.2, 0.3, 0.1, 0.1])
    model = sj.NGramModel(np.log(p), context_length=1)
    op = sj.build_operator(model, sj.StateSpace(6, 1))
    r = ms.metastable_sets(op, k=2)
    assert sum(c.size for c in r.cores) < 6  # the border state is in no core
    good = check_metastable(op, model, result=r, n_chains=400, seed=1)
    assert len(good.rows) == 4 and good.passed, good.table()


def test_check_metastable_reports_what_its_budget_cannot_test(sticky_model):
    op = sj.build_operator(sticky_model, sj.StateSpace(4, 2))
    few = check_metastable(op, sticky_model, n_chains=20, seed=0)
    assert few.inconclusive and few.n_tests == 0 and any("at least 100" in r for r in few.reasons())
    short = check_metastable(op, sticky_model, n_chains=200, seed=0, horizon=3)  # most chains still inside at t=3
    assert short.inconclusive and any("needs horizon >=" in r for r in short.reasons()), short.table()
