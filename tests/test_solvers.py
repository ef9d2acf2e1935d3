"""BiCGSTAB and GMRES (semio_jax.linalg.solvers) against dense LAPACK solves, and the fallback between them."""

from __future__ import annotations

import numpy as np
import pytest

import semio_jax._util.memory as memory_mod
from semio_jax.linalg import solvers


def _identity(r, out):  # no preconditioner: the contract's precond(r, out)
    np.copyto(out, r)
    return out


def _accept_to(target):
    def accept(x, r):
        return float(np.linalg.norm(r)) <= target, 0.5 * target
    return accept


@pytest.mark.parametrize("solver", ["bicgstab", "gmres"])
@pytest.mark.parametrize("seed", range(3))
def test_krylov_solvers_solve_a_nonsymmetric_m_matrix_system(solver, seed):
    # I - Q with Q a random substochastic matrix (row sums 0.9): compared with a dense LAPACK solve
    rng = np.random.default_rng(seed)
    n = 120
    q = rng.random((n, n)) * (rng.random((n, n)) < 0.1)
    q *= 0.9 / np.maximum(q.sum(axis=1, keepdims=True), 1e-300)
    a = np.eye(n) - q
    b = rng.normal(size=n)
    # each solver on its own (krylov_solve would hide a broken BiCGSTAB behind its GMRES fallback)
    solve = solvers.bicgstab if solver == "bicgstab" else solvers.gmres
    x, info = solve(lambda v, out: np.matmul(a, v, out=out), b, _identity, _accept_to(1e-12), max_matvecs=2000)
    assert info.converged and info.matvecs < 200
    np.testing.assert_allclose(x, np.linalg.solve(a, b), rtol=0, atol=1e-10)


def test_bicgstab_breakdown_falls_back_to_gmres():
    # a rotation: (r^, A r^) = 0 at the first step, so BiCGSTAB breaks down at once and stalls
    a = np.array([[0.0, 1.0], [-1.0, 0.0]])
    b = np.array([1.0, 0.0])
    x, info = solvers.bicgstab(lambda v, out: np.matmul(a, v, out=out), b, _identity, _accept_to(1e-12))
    assert not info.converged
    x, info = solvers.krylov_solve("bicgstab", lambda v, out: np.matmul(a, v, out=out), b, _identity, _accept_to(1e-12),
                                  restart=10,
                                  max_matvecs=100)
    assert info.converged
    np.testing.assert_allclose(a @ x, b, atol=1e-12)


def test_basis_budget_follows_available_memory(monkeypatch):
    monkeypatch.setattr(memory_mod, "available_memory", lambda: 1 * 2**30)
    assert solvers.basis_budget() == solvers.BASIS_BUDGET  # 10% of 1 GiB is below the floor
    monkeypatch.setattr(memory_mod, "available_memory", lambda: 20 * 2**30)
    assert solvers.basis_budget() == 2 * 2**30
    monkeypatch.setattr(memory_mod, "available_memory", lambda: 500 * 2**30)
    assert solvers.basis_budget() == solvers.MAX_BASIS_BUDGET


@pytest.mark.parametrize("solver", ["bicgstab", "gmres"])
def test_solvers_write_into_their_own_buffers(solver):
    """matvec(x, out) and precond(r, out) always get an ``out`` distinct from their input, and a real
    (Jacobi) preconditioner writing into those buffers still gives the dense solution."""
    rng = np.random.default_rng(7)
    n = 60
    q = rng.random((n, n)) * (rng.random((n, n)) < 0.2)
    q *= 0.95 / np.maximum(q.sum(axis=1, keepdims=True), 1e-300)
    a = np.eye(n) * rng.uniform(1.0, 3.0, n) - q
    b = rng.normal(size=n)
    outs = set()

    def matvec(v, out):
        assert out.shape == v.shape and not np.shares_memory(out, v)
        outs.add(id(out))
        return np.matmul(a, v, out=out)

    def precond(r, out):
        assert not np.shares_memory(out, r)
        np.divide(r, np.diag(a), out=out)
        return out

    solve = solvers.bicgstab if solver == "bicgstab" else solvers.gmres
    x, info = solve(matvec, b, precond, _accept_to(1e-12), max_matvecs=2000)
    assert info.converged
    np.testing.assert_allclose(x, np.linalg.solve(a, b), rtol=0, atol=1e-10)
    assert len(outs) <= 2  # the products land in the solver's few buffers, not in a new vector each


def test_bicgstab_keeps_seven_vectors():
    """x, r, r^, p, v, t and one buffer for the preconditioned direction and residual: at most
    seven vectors beside b at the peak (with a product and a preconditioner that allocate nothing);
    eight (a separate buffer for the preconditioned residual) fails."""
    from helpers import traced_peak

    n = 1 << 16
    diag = np.linspace(1.0, 3.0, n)
    b = np.random.default_rng(0).normal(size=n)

    def matvec(v, out):
        return np.multiply(diag, v, out=out)

    solvers.bicgstab(matvec, b, _identity, _accept_to(1e-10), max_matvecs=200)  # (numba's first-call loading)
    x0 = np.zeros(n)
    (x, info), peak = traced_peak(solvers.bicgstab, matvec, b, _identity, _accept_to(1e-10), max_matvecs=200, x0=x0)
    assert info.converged
    np.testing.assert_allclose(x, b / diag, rtol=1e-9)
    assert peak <= 7.5 * 8 * n, peak / (8 * n)
    # from x = 0 (no x0) the first shadow residual is b itself: six vectors, and the same iterates
    (x1, info1), peak1 = traced_peak(solvers.bicgstab, matvec, b, _identity, _accept_to(1e-10), max_matvecs=200)
    assert peak1 <= 6.5 * 8 * n, peak1 / (8 * n)
    assert info1.matvecs + 1 == info.matvecs  # (x0 given: one product for its residual)
    np.testing.assert_array_equal(x1, x)
