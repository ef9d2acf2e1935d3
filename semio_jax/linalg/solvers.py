"""Krylov solvers for a linear system A x = b given only as products: BiCGSTAB and restarted GMRES.

Both are right-preconditioned (solve A M^{-1} u = b, x = M^{-1} u) and share one contract:
``matvec(x, out)`` writes A x into ``out`` and returns it, ``precond(r, out)`` writes M^{-1} r
into ``out`` and returns it (``out`` is a buffer the solver owns, never the input: on 2^20
unknowns a fresh 8 MB vector per product was a page-fault storm a process pays again and
again, since the allocator hands such blocks back to the kernel), and ``accept(x, r)``, called with
the iterate and its *true* residual b - A x whenever one is computed, returns (done, tol2):
stop, or keep going until the solver's own estimate of ||r||_2 drops below tol2. So the caller
decides convergence in whatever norm it certifies (an L1 residual of pi, an inf-norm residual),
and a solver's recursively updated residual never passes for the real one.

* **BiCGSTAB** (van der Vorst 1992): two products and two preconditioner solves a step,
  seven vectors in all (x, r, r^, p, v, t, and one buffer that holds the preconditioned
  direction, then the preconditioned residual; from x = 0 the first r^ is b itself: six).
  Its recursive residual drifts from the true one in floating point; it is replaced by the
  true residual each time the recursion reports the target (or every ``check`` steps),
  which also restarts the recurrences. Breakdowns ((r^, r) or (r^, v) exactly 0, a
  non-finite scalar) restart it; two restarts without progress end the solve unconverged.
* **GMRES(m)**: minimises ||b - A M^{-1} u||_2 over the Krylov space, restarted every m steps;
  classical Gram-Schmidt with one re-orthogonalisation where it cancels (the DGKS test).
  Robust where BiCGSTAB stalls, but each step costs a pass over the whole basis: on 2^20
  unknowns its orthogonalisation cost as much as the products and preconditioner together.

:func:`krylov_solve` runs BiCGSTAB and hands its last iterate to GMRES if it stops unconverged.
These functions know nothing about Markov chains (see :mod:`semio_jax.linalg.krylov`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.linalg as sla

from .._util import memory
from . import compiled

__all__ = ["KrylovInfo", "basis_budget", "gmres", "bicgstab", "krylov_solve", "BASIS_BUDGET", "MAX_BASIS_BUDGET"]

#: bytes of Krylov basis vectors GMRES may keep at least (sets the restart length on big spaces);
#: the budget grows to 10% of the available memory, up to MAX_BASIS_BUDGET
BASIS_BUDGET = 256 * 2**20
MAX_BASIS_BUDGET = 4 * 2**30


def basis_budget() -> int:
    """Bytes GMRES may spend on its basis: 10% of available memory, clamped to [BASIS_BUDGET, MAX_BASIS_BUDGET].

    At 2^24 unknowns a vector is 128 MiB: a fixed 256 MiB would leave GMRES(1).
    """

    return int(min(MAX_BASIS_BUDGET, max(BASIS_BUDGET, 0.1 * memory.available_memory())))


@dataclass
class KrylovInfo:
    """Diagnostics of one GMRES solve: matvecs (applications of A), preconditioner solves, restarts, converged."""

    matvecs: int = 0
    precond: int = 0
    restarts: int = 0
    converged: bool = False
    history: list = field(default_factory=list)


def _consult(accept, x: np.ndarray, r: np.ndarray, info: KrylovInfo) -> tuple[bool, float, float]:
    """Hand the true residual r = b - A x to ``accept``: (converged, the 2-norm target tol2, ||r||_2)."""
    done, tol2 = accept(x, r)
    beta = float(np.linalg.norm(r))
    info.history.append(beta)
    if done or beta == 0.0:
        info.converged = True
        return True, tol2, beta
    return False, tol2, beta


# ----------------------------------------------------------------- GMRES
def gmres(matvec, b: np.ndarray, precond, accept, *, restart: int = 40, max_matvecs: int = 5000,
          x0: np.ndarray | None = None, info: KrylovInfo | None = None) -> tuple[np.ndarray, KrylovInfo]:
    """Restarted right-preconditioned GMRES(m); classical Gram-Schmidt with one re-orthogonalisation where needed.

    ``accept(x, r)`` gets the iterate and its true residual b - A x at each
    restart and returns (done, tol2): stop, or keep going until the estimated
    ||r||_2 drops below tol2. Returns (x, info); ``info.converged`` says whether
    ``accept`` was satisfied within ``max_matvecs``.
    """
    info = info or KrylovInfo()
    n = b.size
    x = np.zeros(n) if x0 is None else np.array(x0, dtype=np.float64)
    m = max(2, min(restart, int(basis_budget() // (8 * max(n, 1))) - 1))
    V = np.empty((m + 1, n))
    w, z = np.empty(n), np.empty(n)  # the product and the preconditioned vector of each step
    while True:
        if x0 is not None or info.restarts:
            r = b - matvec(x, w)
            info.matvecs += 1
        else:
            r = b.copy()
        converged, tol2, beta = _consult(accept, x, r, info)
        if converged:
            return x, info
        if info.matvecs >= max_matvecs:
            return x, info
        info.restarts += 1
        V[0] = r / beta
        H = np.zeros((m + 1, m))
        cs, sn = np.zeros(m), np.zeros(m)
        g = np.zeros(m + 1)
        g[0] = beta
        k = 0
        for k in range(m):
            matvec(precond(V[k], z), w)
            info.matvecs += 1
            info.precond += 1
            w_norm = float(np.linalg.norm(w))
            for _ in range(2):  # classical Gram-Schmidt, repeated once when it cancels (DGKS criterion)
                h = V[: k + 1] @ w
                w -= h @ V[: k + 1]
                H[: k + 1, k] += h
                hnext = float(np.linalg.norm(w))
                if hnext > 0.7 * w_norm:
                    break
                w_norm = hnext
            H[k + 1, k] = hnext
            if hnext > 0:
                V[k + 1] = w / hnext
            for i in range(k):  # apply the previous Givens rotations
                a, c = H[i, k], H[i + 1, k]
                H[i, k], H[i + 1, k] = cs[i] * a + sn[i] * c, -sn[i] * a + cs[i] * c
            rr = np.hypot(H[k, k], H[k + 1, k])
            if rr == 0.0:
                break
            cs[k], sn[k] = H[k, k] / rr, H[k + 1, k] / rr
            H[k, k], H[k + 1, k] = rr, 0.0
            g[k + 1], g[k] = -sn[k] * g[k], cs[k] * g[k]
            if abs(g[k + 1]) <= tol2 or hnext == 0 or info.matvecs >= max_matvecs:
                break
        kk = k + 1
        diag = np.abs(np.diag(H[:kk, :kk]))
        kk = int(np.flatnonzero(diag > 0)[-1]) + 1 if (diag > 0).any() else 0
        if kk:
            coef = sla.solve_triangular(H[:kk, :kk], g[:kk])
            x += precond(coef @ V[:kk], z)
            info.precond += 1


def bicgstab(matvec, b: np.ndarray, precond, accept, *, check: int = 60, max_matvecs: int = 5000,
             x0: np.ndarray | None = None, info: KrylovInfo | None = None) -> tuple[np.ndarray, KrylovInfo]:
    """Right-preconditioned BiCGSTAB with residual replacement; the same contract as :func:`gmres`.

    Each step costs two products with A and two preconditioner solves, and a fixed handful of
    vector operations (no growing basis: seven vectors in all). The recursively updated
    residual drifts from the true one, so whenever it reaches the target ``tol2`` (or after
    ``check`` steps) the true residual b - A x is computed and handed to ``accept``, and it
    replaces the recursive one. A breakdown (rho or (r^, v) exactly 0, a non-finite scalar)
    restarts the recurrences from the true residual; two restarts in a row without progress
    stop the solve (``info.converged`` False: the caller moves on to GMRES).
    """
    info = info or KrylovInfo()
    n = b.size
    x = np.zeros(n) if x0 is None else np.array(x0, dtype=np.float64)
    p, v, t = np.zeros(n), np.zeros(n), np.empty(n)
    # the preconditioned direction of each step, then (once x has taken it) the preconditioned residual
    ph = sh = np.empty(n)
    if x0 is None:
        r = b.copy()
    else:
        r = b - matvec(x, t)
        info.matvecs += 1
    stalls, best = 0, float("inf")
    first = x0 is None  # r is still b, unchanged
    while True:
        # --- true residual: accept, replace, restart the recurrences
        converged, tol2, beta = _consult(accept, x, r, info)
        if converged:
            return x, info
        if info.matvecs >= max_matvecs or not np.isfinite(beta):
            return x, info
        stalls = stalls + 1 if beta >= best else 0
        best = min(best, beta)
        if stalls >= 2:
            return x, info
        info.restarts += 1
        # the shadow residual r^ = r at each restart; on the first from x = 0 that is b itself,
        # which the caller keeps and nothing here writes to: no copy (a vector less at the peak)
        rhat = b if first and b.dtype == np.float64 and b.flags.c_contiguous else r.copy()
        first = False
        p.fill(0.0)
        v.fill(0.0)
        rho = alpha = omega = 1.0
        rho_next = float(r @ r)  # rhat . r, kept up to date by the second update of each step
        for _ in range(check):
            rho_new = rho_next
            scale = (rho_new / rho) * (alpha / omega) if rho != 0.0 and omega != 0.0 else 0.0
            if rho_new == 0.0 or not np.isfinite(scale):
                break
            compiled.direction_update(p, r, v, scale, omega)
            precond(p, ph)
            matvec(ph, v)
            info.matvecs += 1
            info.precond += 1
            den = float(rhat @ v)
            if den == 0.0 or not np.isfinite(den):
                break
            alpha = rho_new / den
            if compiled.step_update(x, ph, alpha, r, v) <= tol2:  # x += alpha ph; r -= alpha v (r is now s)
                break
            precond(r, sh)
            matvec(sh, t)
            info.matvecs += 1
            info.precond += 1
            tt, tr = compiled.dot_pair(t, r)
            omega = tr / tt if tt > 0.0 else 0.0
            if omega == 0.0 or not np.isfinite(omega):
                break
            norm_r, rho_next = compiled.step_update(x, sh, omega, r, t, rhat)  # x += omega sh; r -= omega t
            rho = rho_new
            if norm_r <= tol2 or info.matvecs >= max_matvecs:
                break
        np.subtract(b, matvec(x, t), out=r)
        info.matvecs += 1


def krylov_solve(solver: str, matvec, b, precond, accept, *, restart: int, max_matvecs: int, x0=None, info=None):
    """One solve by ``solver``: "bicgstab" (the default everywhere), falling back to GMRES from its last
    iterate when it stops without converging; or "gmres" alone."""
    if solver not in ("bicgstab", "gmres"):
        raise ValueError(f"unknown Krylov solver {solver!r}; use bicgstab or gmres")
    if solver == "bicgstab":
        x, info = bicgstab(matvec, b, precond, accept, max_matvecs=max_matvecs, x0=x0, info=info)
        if info.converged or info.matvecs >= max_matvecs:
            return x, info
        x0 = x
    return gmres(matvec, b, precond, accept, restart=restart, max_matvecs=max_matvecs, x0=x0, info=info)
