"""Mixing: spectral gaps per attractor, exact total-variation curves, mixing times.

Spectrum. Restricted to an attractor C (a closed, irreducible class) the
operator is a stochastic matrix P_C. Its eigenvalue 1 is simple (Perron); the
**second-largest eigenvalue modulus** is

    SLEM = max { |lambda| : lambda an eigenvalue of P_C other than the Perron 1 },

the **spectral gap** is 1 - SLEM and the **relaxation time** 1 / gap. For an
aperiodic class, ||mu P^t - pi||_TV = O(t^(m-1) SLEM^t) (m the size of the
largest Jordan block of the SLEM eigenvalue), so -1/log(SLEM) ~ 1/gap is the
time scale of convergence. A class of period d > 1 has the d-th roots of unity
as eigenvalues: its SLEM is 1 and its gap 0, and the TV distance does not go
to 0. For it we also report the **lazy** chain (I + P)/2 (same stationary
distribution, aperiodic): lazy_SLEM = max_{lambda != 1} |1 + lambda| / 2.

Which eigenvalue is the Perron one is decided by its left eigenvector rather
than by rounding: every left eigenvector x of lambda != 1 satisfies
x . 1 = 0 (x P 1 = x 1 = lambda x 1), while the Perron vector is pi; we take
the eigenpair with the largest |x . 1| / ||x||_1.

Methods (``method=``):

* ``"dense"`` (|C| <= DENSE_MAX = 2000): LAPACK ``eig`` of the dense |C| x |C|
  block (all eigenvalues, left vectors). The **reference**
  :func:`spectral_gap_reference` builds the block with Python loops and calls
  ``numpy.linalg.eigvals`` (test oracle).
* ``"arnoldi"``: ARPACK (scipy ``eigs``, k eigenvalues of largest modulus) on a
  ``LinearOperator`` x -> (x P)|_C built from the structured :meth:`Operator.push`;
  no matrix is formed. For periodic classes k > period is used, and the lazy
  SLEM comes from a second run on (I + P)/2.

Each class reports ``residual = ||x P - lambda_2 x||_1 / ||x||_1`` for the
computed left eigenvector x of lambda_2, evaluated with the structured operator.

Total variation. For a start s (a state or a distribution mu_0), the limit law
is pi_s = sum_a h_a(s) pi_a, where h are the absorption probabilities
(:mod:`~semio_jax.analysis.basins`) and pi_a the stationary distributions; for
aperiodic attractors mu_t = mu_0 P^t -> pi_s. We compute exactly (by t
structured pushes, float64)

    d_s(t) = ||mu_t - pi_s||_TV = (1/2) sum_x |mu_t(x) - pi_s(x)|,   t = 0..n.

Since pi_s P = pi_s and P contracts total variation, d_s(t) is non-increasing
for every chain; it tends to 0 iff every attractor reachable from s is
aperiodic (else pass ``lazy=True`` to study (I + P)/2).
:func:`worst_case_tv` is d(t) = max over the full states s of d_s(t) (computed
for every start in batches; only for N^L <= WORST_CASE_MAX = 4096), and
:func:`mixing_time` is t_mix(eps) = min { t : d(t) <= eps }.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.linalg as sla
import scipy.sparse.linalg as spla

from ..errors import ConvergenceError, StateSpaceTooLargeError
from ._cache import cached_analysis
from .basins import basins_result
from .classes import class_structure
from .evolution import initial_distribution
from .stationary import stationary_result

__all__ = [
    "ClassSpectrum", "SpectralGapResult", "spectral_gap", "tv_distance", "worst_case_tv", "mixing_time",
    "limit_distribution", "DENSE_MAX", "WORST_CASE_MAX",
]

DENSE_MAX = 2000
AUTO_DENSE_MAX = 256  # "auto" goes dense only up to here: LAPACK eig with vectors is O(n^3) and slow beyond
WORST_CASE_MAX = 4096
_BATCH_BYTES = 2**26  # memory for one batch of pushed distributions (64 MiB)


@dataclass
class ClassSpectrum:
    """Spectral quantities of one attractor.

    Attributes:
      attractor: index of the attractor (class_structure order).
      size: number of states in it.
      period: its period (1 = aperiodic).
      eigenvalue: lambda_2, the non-Perron eigenvalue of largest modulus (complex; 0 for one state).
      slem: |lambda_2|.
      gap: 1 - slem.
      relaxation_time: 1 / gap (inf when gap == 0).
      lazy_slem: SLEM of (I + P)/2 (None when not computed: Arnoldi on an aperiodic class).
      method: "trivial", "dense" or "arnoldi".
      residual: ||x P - lambda_2 x||_1 / ||x||_1 for the computed left eigenvector x (structured push).
      leading: the computed eigenvalues of largest modulus (all of them for "dense"), sorted by modulus.
      note: caveats in words.
    """

    attractor: int
    size: int
    period: int
    eigenvalue: complex
    slem: float
    gap: float
    relaxation_time: float
    lazy_slem: float | None
    method: str
    residual: float
    leading: np.ndarray = field(repr=False)
    note: str = ""

    @property
    def lazy_gap(self) -> float | None:
        return None if self.lazy_slem is None else 1.0 - self.lazy_slem

    def summary(self) -> dict:
        return {
            "attractor": self.attractor, "size": self.size, "period": self.period,
            "lambda2": [float(np.real(self.eigenvalue)), float(np.imag(self.eigenvalue))],
            "slem": self.slem, "gap": self.gap, "relaxation_time": self.relaxation_time,
            "lazy_slem": self.lazy_slem, "method": self.method, "residual_l1": self.residual, "note": self.note,
        }


@dataclass
class SpectralGapResult:
    """One :class:`ClassSpectrum` per attractor."""

    classes: list

    @property
    def slem(self) -> list[float]:
        return [c.slem for c in self.classes]

    @property
    def gap(self) -> list[float]:
        return [c.gap for c in self.classes]

    @property
    def relaxation_time(self) -> list[float]:
        return [c.relaxation_time for c in self.classes]

    def summary(self) -> list[dict]:
        return [c.summary() for c in self.classes]


# ----------------------------------------------------------------- spectrum
def _embed(op, members: np.ndarray, v: np.ndarray) -> np.ndarray:
    full = np.zeros(op.num_states)
    full[members] = v
    return full


def _left_residual(op, members: np.ndarray, x: np.ndarray, lam: complex) -> float:
    """||x P - lam x||_1 / ||x||_1 with the structured push (x supported on the closed class)."""
    x = np.asarray(x, dtype=np.complex128)
    xr = op.push(_embed(op, members, x.real))[members]
    xi = op.push(_embed(op, members, x.imag))[members]
    r = (xr + 1j * xi) - lam * x
    return float(np.abs(r).sum() / max(np.abs(x).sum(), 1e-300))


def _split_perron(vals: np.ndarray, left: np.ndarray) -> tuple[int, np.ndarray]:
    """Index of the Perron eigenpair (largest |x.1|/||x||_1) and the indices of the others."""
    score = np.abs(left.sum(axis=0)) / np.maximum(np.abs(left).sum(axis=0), 1e-300)
    score = score - 1e-3 * np.abs(vals - 1.0)  # break exact ties towards lambda = 1
    j = int(np.argmax(score))
    rest = np.array([i for i in range(vals.size) if i != j], dtype=np.int64)
    return j, rest


def _dense_spectrum(op, a: int, members: np.ndarray, period: int) -> ClassSpectrum:
    block = op.block(members).toarray()
    vals, vl = sla.eig(block, left=True, right=False)
    left = vl.conj()  # x P = lambda x  <=>  vl^H P = lambda vl^H
    j, rest = _split_perron(vals, left)
    others = vals[rest]
    i2 = int(rest[np.argmax(np.abs(others))])
    lam = complex(vals[i2])
    slem = float(min(abs(lam), 1.0))
    lazy = float(min(np.max(np.abs(1.0 + others)) / 2.0, 1.0))
    order = np.argsort(-np.abs(vals), kind="stable")
    res = _left_residual(op, members, left[:, i2], lam)
    note = f"period {period}: SLEM = 1, d(t) does not tend to 0; see lazy_slem" if period > 1 else ""
    return _make(a, members.size, period, lam, slem, lazy, "dense", res, vals[order], note)


def _make(a, size, period, lam, slem, lazy, method, res, leading, note) -> ClassSpectrum:
    if period > 1:
        slem = 1.0
    gap = 1.0 - slem
    return ClassSpectrum(attractor=a, size=int(size), period=int(period), eigenvalue=complex(lam), slem=slem,
                         gap=gap, relaxation_time=(1.0 / gap if gap > 0 else float("inf")), lazy_slem=lazy,
                         method=method, residual=res, leading=np.asarray(leading), note=note)


def _class_linear_operator(op, members: np.ndarray, lazy: bool) -> spla.LinearOperator:
    n = members.size

    def matvec(v):
        v = np.asarray(v).ravel()
        if np.iscomplexobj(v):
            out = op.push(_embed(op, members, v.real))[members] + 1j * op.push(_embed(op, members, v.imag))[members]
        else:
            out = op.push(_embed(op, members, v))[members]
        return 0.5 * (v + out) if lazy else out

    return spla.LinearOperator((n, n), matvec=matvec, dtype=np.float64)


def _arnoldi(op, members: np.ndarray, k: int, lazy: bool, tol: float, maxiter: int):
    lin = _class_linear_operator(op, members, lazy)
    v0 = np.random.default_rng(0).random(members.size) + 0.5
    try:
        vals, vecs = spla.eigs(lin, k=k, which="LM", v0=v0, tol=tol, maxiter=maxiter)
    except spla.ArpackNoConvergence as exc:
        if exc.eigenvalues is None or len(exc.eigenvalues) < 2:
            raise ConvergenceError(
                f"ARPACK did not converge on attractor of {members.size} states (k={k}); "
                f"raise maxiter or use method='dense' for a smaller class") from exc
        vals, vecs = exc.eigenvalues, exc.eigenvectors
    return vals, vecs


def _arnoldi_spectrum(op, a: int, members: np.ndarray, period: int, k: int, tol: float,
                      maxiter: int) -> ClassSpectrum:
    n = members.size
    kk = int(min(max(k, period + 2), n - 2))
    vals, vecs = _arnoldi(op, members, kk, False, tol, maxiter)
    j, rest = _split_perron(vals, vecs)
    others = vals[rest]
    i2 = int(rest[np.argmax(np.abs(others))])
    lam = complex(vals[i2])
    res = _left_residual(op, members, vecs[:, i2], lam)
    lazy, note = None, ""
    if period > 1:
        lv, lvec = _arnoldi(op, members, min(max(k, 3), n - 2), True, tol, maxiter)
        _, lrest = _split_perron(lv, lvec)
        lazy = float(min(np.max(np.abs(lv[lrest])), 1.0))
        note = f"period {period}: SLEM = 1, d(t) does not tend to 0; see lazy_slem"
    order = np.argsort(-np.abs(vals), kind="stable")
    return _make(a, n, period, lam, float(min(abs(lam), 1.0)), lazy, "arnoldi", res, vals[order], note)


@cached_analysis("spectral_gap")
def spectral_gap(op, method: str = "auto", k: int = 6, tol: float = 1e-12,
                 maxiter: int = 20_000) -> SpectralGapResult:
    """SLEM, spectral gap and relaxation time of every attractor (see module docstring).

    Args:
      op: the Operator.
      method: "auto" (dense up to AUTO_DENSE_MAX = 256 states per class, Arnoldi above), "dense" (up to DENSE_MAX) or "arnoldi".
      k: number of eigenvalues ARPACK computes (raised above the period for periodic classes).
      tol, maxiter: ARPACK settings.
    """
    if method not in ("auto", "dense", "arnoldi"):
        raise ValueError(f"unknown spectral method {method!r}; use auto, dense or arnoldi")
    cs = class_structure(op)
    out = []
    for a, members in enumerate(cs.attractors):
        period = int(cs.periods[a])
        n = members.size
        if n == 1:
            out.append(_make(a, 1, 1, 0.0, 0.0, 0.0, "trivial", 0.0, np.ones(1), "a single absorbing state"))
            continue
        m = method
        if m == "auto" or (m == "arnoldi" and n < 16):  # ARPACK needs k < n - 1
            m = "dense" if n <= AUTO_DENSE_MAX or n < 16 else "arnoldi"
        if m == "dense":
            out.append(_dense_spectrum(op, a, members, period))
        else:
            out.append(_arnoldi_spectrum(op, a, members, period, k, tol, maxiter))
    return SpectralGapResult(out)


# -------------------------------------------------------- total variation
def limit_distribution(op, start) -> np.ndarray:
    """pi_s = sum_a h_a(s) pi_a: the long-run law from ``start`` (state index, prompt or distribution)."""
    return stationary_result(op).mixture(basins_result(op).absorption(_start_vector(op, start)))


def _start_vector(op, start) -> np.ndarray:
    """The start as a distribution: a state index, a prompt (token list) or a distribution."""
    return initial_distribution(op, start)


def _step(op, mu: np.ndarray, lazy: bool) -> np.ndarray:
    nxt = op.push(mu)
    return 0.5 * (mu + nxt) if lazy else nxt


def tv_distance(op, start, n: int, lazy: bool = False) -> np.ndarray:
    """d(t) = ||mu_0 P^t - pi_start||_TV for t = 0..n: float64[n + 1] (exact, structured pushes).

    Args:
      op: the Operator.
      start: a state index, or a probability vector float64[S].
      n: the last time.
      lazy: use the lazy chain (I + P)/2 (same limit law; aperiodic).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    mu = _start_vector(op, start)
    lim = limit_distribution(op, start)
    out = np.empty(n + 1)
    for t in range(n + 1):
        out[t] = 0.5 * np.abs(mu - lim).sum()
        if t < n:
            mu = _step(op, mu, lazy)
    return out


def _full_state_batches(op):
    nf = op.space.num_full
    if nf > WORST_CASE_MAX:
        raise StateSpaceTooLargeError(
            f"the worst case over all {nf} full states needs {nf} exact evolutions; only N^L <= "
            f"{WORST_CASE_MAX} is supported. Use tv_distance(op, start, n) for chosen starts, "
            f"or the bounds of semio_jax.analysis.bounds")
    m = max(1, min(nf, _BATCH_BYTES // (8 * op.num_states * max(op.n_tokens, 2))))
    pis = stationary_result(op).sparse()  # csr [a, S]
    b = basins_result(op)
    for lo in range(0, nf, m):
        starts = np.arange(lo, min(lo + m, nf))
        mu = np.zeros((op.num_states, starts.size))
        mu[starts, np.arange(starts.size)] = 1.0
        lim = np.asarray((pis.T @ b.rows(starts).T))  # [S, m]
        yield starts, mu, lim


def worst_case_tv(op, n: int, lazy: bool = False) -> np.ndarray:
    """d(t) = max over full states s of d_s(t), t = 0..n: float64[n + 1]. Needs N^L <= WORST_CASE_MAX."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    out = np.zeros(n + 1)
    for _, mu, lim in _full_state_batches(op):
        for t in range(n + 1):
            out[t] = max(out[t], float(0.5 * np.abs(mu - lim).sum(axis=0).max()))
            if t < n:
                mu = _step(op, mu, lazy)
    return out


def _check_periodic(op, start, lazy: bool) -> None:
    if lazy:
        return
    cs = class_structure(op)
    if start is None:
        reach = range(len(cs.attractors))
    else:
        rows = basins_result(op).reachable_rows(np.flatnonzero(_start_vector(op, start) > 0)).any(axis=0)
        reach = np.flatnonzero(rows)
    bad = [(int(a), cs.periods[a]) for a in reach if cs.periods[a] > 1]
    if bad:
        raise ValueError(
            "attractor(s) " + ", ".join(f"A{a} (period {d})" for a, d in bad)
            + " are periodic: d(t) does not tend to 0, so the mixing time is undefined; "
              "pass lazy=True for the lazy chain (I + P)/2")


def mixing_time(op, eps: float = 0.25, start=None, lazy: bool = False, max_steps: int = 100_000) -> int | None:
    """t_mix(eps) = min { t >= 0 : d(t) <= eps }.

    Args:
      eps: the TV threshold, 0 < eps < 1.
      start: a state index or distribution (d = d_start); None: the worst case over full states
        (needs N^L <= WORST_CASE_MAX).
      lazy: use (I + P)/2. Periodic attractors raise ValueError unless lazy=True.
      max_steps: give up (return None) after this many steps.
    """
    if not 0 < eps < 1:
        raise ValueError(f"eps must lie in (0, 1), got {eps}")
    _check_periodic(op, start, lazy)
    if start is not None:
        mu = _start_vector(op, start)
        lim = limit_distribution(op, start)
        for t in range(max_steps + 1):
            if 0.5 * np.abs(mu - lim).sum() <= eps:
                return t
            mu = _step(op, mu, lazy)
        return None
    worst = 0
    for _, mu, lim in _full_state_batches(op):
        t = 0
        while 0.5 * np.abs(mu - lim).sum(axis=0).max() > eps:
            if t >= max_steps:
                return None
            mu = _step(op, mu, lazy)
            t += 1
        worst = max(worst, t)
    return worst
