"""Stationary distributions of the closed classes, with residuals and error bounds.

For each attractor C (a closed, irreducible class) there is exactly one
probability vector pi_C supported on C with pi_C P = pi_C. The stationary
distributions of the whole chain are the convex combinations of these.

Algorithms (``method=``):

* ``"gth"``: Grassmann-Taksar-Heyman state reduction on the dense |C| x |C|
  block. It never subtracts, so every entry of pi is computed to high
  *relative* accuracy however slowly the chain mixes or however nearly
  decomposable it is. O(|C|^3), blocked so that most of the work is one
  matrix product per 64 states; the default for |C| <= 1024.
* ``"lu"``: pick a reference state j (largest mass after a short lazy power
  run); with Q_j the block of P on C \\ {j} and r_j = P[j, C \\ {j}], solve
  x (I - Q_j) = r_j by sparse LU and set pi = (x, 1) / Z. I - Q_j is a
  non-singular M-matrix, so this is backward stable; two steps of iterative
  refinement follow. The default for larger classes.
* ``"krylov"``: the same reduced system x (I - Q_j) = r_j solved by BiCGSTAB
  (GMRES where it stalls) with only structured matvecs, preconditioned by the greedy part of the chain
  (one edge per state, a functional graph, solved exactly); see
  :mod:`semio_jax.linalg.krylov`. Tens of matvecs on slowly mixing chains
  where power iteration needs 10^4 or more. It stops at the residual target
  ``tol`` or raises ConvergenceError. tau_j (for the bound below) comes from a
  second Krylov solve of (I - Q_j) t = 1 with j the state of largest mass, to an
  inf-norm residual of 0.1 (all the certificate needs), certified as an M-matrix
  inequality (as for LU), else from :func:`hitting_time_bound`.
* ``"power"``: power iteration with every 8th step lazy (pi <- pi (I + P) / 2, which
  also makes periodic classes converge) and the structured push into fixed buffers.
  It stops at the residual target or raises ConvergenceError. tau_j is certified
  from the computed pi itself (:func:`semio_jax.linalg.krylov.hitting_time_certificate`:
  a Richardson iteration on (I - Q_j) t = 1 whose slow, constant direction is fixed by
  pi, so it converges at the chain's mixing rate, about 1/6 of the power steps),
  falling back to the Krylov solve and then to :func:`hitting_time_bound`.

What is certified, and with respect to what. The chain is the one the model's
float32 logits define under the procedure (exact support, exact probabilities);
the float64 table differs from it entrywise by at most ``op.table_rounding``
(relative). Per attractor the result reports:

* ``residual``: ||pi P - pi||_1 evaluated with the full float64 operator.
* ``error_bound``: a rigorous bound on ||pi_hat - pi||_1 for the model's chain,
  the smaller of
  - the **enclosure** bound (GTH): GTH is monotone in its non-negative data, so
    running it on the table widened by its rounding, every rounded result moved
    outward (:func:`semio_jax.linalg.gth.gth_enclosure`, log domain where needed),
    encloses every entry of pi; this also gives ``relative_bounds``, a bound on
    max_s |pi_hat(s)/pi(s) - 1|. It is the a-posteriori form of O'Cinneide's
    (1993) entrywise stability of GTH and of the entrywise perturbation theory of
    Markov chains (relative changes rho of the transition probabilities move each
    pi_j by at most (1 + rho)^(n-1)/(1 - rho)^(n-1) - 1, by the Markov chain tree
    theorem): it does not degrade on slowly mixing or nearly decomposable chains;
  - the **residual** bound (every method): with A = I - P and its group inverse
    A#, pi_hat - pi = (pi_hat A) A# whenever pi_hat sums to 1, and Meyer's
    formula A# = (I - 1 pi) diag((I - Q_j)^{-1}, 0) (I - 1 pi) gives
    ||A#||_inf <= 4 tau_j, tau_j = max_i E_i[steps to hit j] the largest row sum
    of (I - Q_j)^{-1}. The table's rounding enters as a perturbation E with
    ||E||_inf <= rho (Cho & Meyer's bound ||pi - pi~||_1 <= ||E||_inf ||A#||_inf), so

        ||pi_hat - pi||_1 <= 4 tau_j (r + (N + 3) eps + rho) + |sum pi_hat - 1|,

    the residual r enlarged by its own rounding (each entry of pi P sums at most
    N + 1 products). On slowly mixing chains tau_j is large and this bound says
    so: a residual of 1e-16 with tau_j = 1e6 certifies only ~4e-10.
    tau_j comes from the solve (LU, GTH, Krylov, or for ``power`` the certificate from
    pi, :func:`semio_jax.linalg.krylov.hitting_time_certificate`), certified as an
    M-matrix inequality; the last resort, :func:`hitting_time_bound`, bounds it
    without solving: with g_n(i) = P_i(hit j within n steps), computed exactly by n
    structured pulls, tau_j <= n / min_i g_n(i), n doubled from L up to 64 L until
    the minimum is positive (10^6 to 10^9 times too large on big classes).
  A bound that is not below 1 is reported as None (not certified), and
  ``certifies`` says in words which bound holds.
* ``log_values``: log pi, finite wherever pi > 0 even below the float64 range.
* ``unrepresentable``: the class has possible moves below ~1e-290 and is larger
  than the log-domain GTH limit, so a float64 method had to treat them as 0:
  nothing is certified and an :class:`~semio_jax.errors.UnrepresentableWarning`
  is issued.

**Underflow.** Classes with possible moves below ~1e-290 (zero or subnormal in
float64) are solved by GTH in the log domain (:func:`semio_jax.linalg.gth.gth_log`,
products as sums, sums as log-sum-exps), which is exact to rounding however
small the moves; so is any class where float64 elimination breaks down (a
vanishing exit rate, a NaN). A NaN or inf is never a result: it is an error
that ``auto`` turns into the next method.

``auto`` uses GTH (float64, or the log domain where needed) up to 1024 states per class, LU up to 8192 (its fill-in
grows quickly on de Bruijn graphs, which are expanders) and Krylov above;
there it first gives power iteration 400 steps and turns to Krylov if that is not
enough, or as soon as the residual's decay over the last 16 steps projects that
400 will not be; the Krylov solve then starts from the power iterate. The
threshold is where the two cost about the same on the 2^20-window benchmark
chains (compiled loops): a power step costs about 1.3 ms there, a BiCGSTAB product
with its preconditioner sweep and its share of the vector updates about 8 ms; the
random transformer at t=1 (tf2) needs 730 power steps but 91 Krylov products (pi and
tau_j, after a 40-step trial), the fast n-gram 130 steps against 74 products (power
0.5 s, Krylov 0.9 s). When power succeeds, tau_j comes from pi as for
``power`` (on the fast 2^20 benchmark chain: 66 pulls and a bound within 0.4% of
the Krylov value).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from .._util.memory import refuse_if_over
from ..errors import ConvergenceError, UnrepresentableWarning
from ..linalg.gth import gth, gth_enclosure, gth_log_enclosure
from ..linalg import compiled, krylov
from ..linalg.mmatrix import EPS, certified_max_time, off_diagonal
from ..linalg.sharded import ShardedOperator
from ._cache import cached_analysis
from .classes import class_structure

__all__ = ["StationaryResult", "stationary", "stationary_result", "stationary_sharded", "gth", "hitting_time_bound"]

GTH_MAX = 1024
LU_MAX = 8192
#: above this class size ``auto`` tries POWER_FIRST_ITERS steps of power iteration before Krylov (every
#: class past LU: with the certificate from pi, power costs ~n + n/6 products on a chain that mixes in n)
KRYLOV_AUTO_MAX = LU_MAX
POWER_FIRST_ITERS = 400
_PROBE = 16  # steps over which the trial power run measures its rate of convergence (from 32 steps on)
CHECK = 8  # power iteration: CHECK - 1 plain steps, then a lazy one with the residual test
BLOCK_FRACTION = 4  # a class of at most 1/4 of the full states is solved as a sparse chain of its own
#: inf-norm residual of the Krylov hitting-time solve: the certificate then loses at most a factor
#: (1 + 0.1) / (1 - 0.1) in tightness, 0.01-0.1% on the 2^20 benchmark chains, for 3-10 fewer products than 1e-2
TAU_RTOL = 0.1


@dataclass
class StationaryResult:
    """Stationary distributions of every attractor, with their diagnostics.

    Storage is per attractor: pi_i lives on attractor i only, so the result
    holds sum_i |A_i| <= N^L numbers however many attractors there are (a
    greedy copy model has thousands; dense rows would need n_attractors x |S|).

    Attributes:
      supports: int64 array per attractor: its states (sorted), where pi_i may be non-zero.
      values: float64 array per attractor: pi_i on ``supports[i]`` (sums to 1 up to rounding).
      num_states: |S|, the length of a dense distribution.
      residuals: ||pi_i P - pi_i||_1 per attractor.
      error_bounds: certified bound on ||pi_i - true pi_i||_1 (None where not certified).
      hitting_times: tau_j used in the bound (a certified upper bound on the max expected
        steps to the reference state; None where it could not be certified).
      reference_states: the reference state j of each attractor.
      methods: algorithm used per attractor.
      log_values: float64 array per attractor: log pi_i on ``supports[i]`` (finite even where pi_i is
        below the float64 range: the log-domain GTH computes it directly).
      relative_bounds: certified bound on max_s |pi_hat(s) / pi(s) - 1| over the attractor (GTH's
        enclosure; None for the other methods), with respect to the model's own logits.
      certifies: one sentence per attractor: what the bounds certify, and with respect to what.
      unrepresentable: True where the class holds possible transitions below the float64 range and
        no log-domain method could be used: then nothing is certified (a
        :class:`~semio_jax.errors.UnrepresentableWarning` is issued too).
      matvecs: structured matrix-vector products used by an iterative method (None for gth/lu;
        for krylov both solves, pi and tau_j, are counted; for power its steps, plus the
        Krylov solve for tau_j when ``auto`` chose power).

    Dense views: ``distribution(i)`` (float64[S], zero outside attractor i),
    ``distributions`` (float64[n_attractors, S]; refused with
    StateSpaceTooLargeError when it would not fit), ``mixture(w)`` (sum_i w_i pi_i)
    and ``expectations(f)`` (sum_s pi_i(s) f(s) per attractor) without a dense matrix.
    """

    num_states: int
    supports: list = field(default_factory=list)
    values: list = field(default_factory=list)
    residuals: list = field(default_factory=list)
    error_bounds: list = field(default_factory=list)
    hitting_times: list = field(default_factory=list)
    reference_states: list = field(default_factory=list)
    methods: list = field(default_factory=list)
    matvecs: list = field(default_factory=list)
    log_values: list = field(default_factory=list)
    relative_bounds: list = field(default_factory=list)
    certifies: list = field(default_factory=list)
    unrepresentable: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.supports)

    def distribution(self, i: int) -> np.ndarray:
        """float64[S]: pi_i as a dense vector (zero outside attractor i)."""
        out = np.zeros(self.num_states)
        out[self.supports[i]] = self.values[i]
        return out

    def mixture(self, weights) -> np.ndarray:
        """float64[S]: sum_i weights[i] pi_i (e.g. the long-run law from a start, weights = absorption probabilities)."""
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (len(self),):
            raise ValueError(f"weights have shape {w.shape}, expected ({len(self)},): one per attractor")
        out = np.zeros(self.num_states)
        for wi, sup, val in zip(w, self.supports, self.values):
            if wi != 0.0:
                out[sup] += wi * val
        return out

    def expectations(self, f) -> np.ndarray:
        """float64[n_attractors]: E_{pi_i}[f] = sum_s pi_i(s) f(s) for f: float64[S]."""
        f = np.asarray(f, dtype=np.float64)
        if f.shape != (self.num_states,):
            raise ValueError(f"f has shape {f.shape}, expected ({self.num_states},)")
        return np.array([float(val @ f[sup]) for sup, val in zip(self.supports, self.values)])

    @property
    def distributions(self) -> np.ndarray:
        """float64[n_attractors, S]: row i is pi_i. Refused up front when it would not fit in memory."""
        refuse_if_over(
            8 * len(self) * self.num_states,
            f"a dense [n_attractors, S] = [{len(self):,}, {self.num_states:,}] array of stationary laws",
            f"use distribution(i), supports/values, mixture(w) or expectations(f), which store "
            f"{sum(int(s.size) for s in self.supports):,} numbers in all")
        return self.sparse().toarray()

    def sparse(self) -> sp.csr_matrix:
        """scipy CSR [n_attractors, S]: row i is pi_i."""
        rows = np.repeat(np.arange(len(self)), [s.size for s in self.supports])
        cols = np.concatenate(self.supports) if len(self) else np.zeros(0, dtype=np.int64)
        vals = np.concatenate(self.values) if len(self) else np.zeros(0)
        return sp.csr_matrix((vals, (rows, cols)), shape=(len(self), self.num_states))

    def add(self, members: np.ndarray, pi_full: np.ndarray, *, residual: float, hitting_time: float | None,
            reference_state: int, method: str, n_tokens: int, matvecs: int | None = None,
            table_rounding: float = 0.0, log_pi: np.ndarray | None = None,
            enclosure: tuple[np.ndarray, np.ndarray] | None = None, unrepresentable: bool = False) -> None:
        """Record one attractor's pi (dense ``pi_full``, kept on ``members``) and certify it.

        The one place the certificates are computed, for every solver (GTH, LU, Krylov, power,
        sharded). Two rigorous bounds on ||pi_hat - pi||_1, pi the stationary law of the chain
        the model's float32 logits define:

        * residual: ``4 max(tau_j, 1) (r_hi + rho) + |sum pi - 1|``, r_hi the residual enlarged by
          its own rounding ((N + 3) eps: each entry of pi P sums at most N + 1 products) and rho
          the table's relative rounding against the logits (||P - P_hat||_inf <= rho), by
          Meyer's group-inverse bound ||A#||_inf <= 4 tau_j; None without a tau_j;
        * enclosure (GTH): ``enclosure = (log pi_lo, log pi_hi)`` on ``members`` (in log form),
          rigorous entrywise bounds; the L1 bound sums max(pi_hi - pi_hat, pi_hat - pi_lo), and
          the entrywise relative bound is reported in ``relative_bounds``.

        The smaller is kept; a bound >= 1 says nothing and is reported as None (not certified).
        ``unrepresentable`` classes get no certificate at all.
        """
        sup = np.asarray(members, dtype=np.int64)
        if sup.size > 1 and not bool((sup[1:] > sup[:-1]).all()):  # class_structure hands them over sorted
            sup = np.sort(sup)
        vals = np.array(pi_full[sup], dtype=np.float64)
        self.supports.append(sup)
        self.values.append(vals)
        if log_pi is None:
            with np.errstate(divide="ignore"):
                log_pi = np.log(vals)
        else:
            log_pi = np.asarray(log_pi, dtype=np.float64)[np.argsort(np.asarray(members))]
        self.log_values.append(log_pi)
        self.residuals.append(float(residual))
        self.hitting_times.append(hitting_time)
        bound, rel, what = None, None, "nothing (not certified)"
        if not unrepresentable:
            if hitting_time is not None:
                resid_hi = residual * (1.0 + self.num_states * EPS) + (n_tokens + 3) * EPS
                bound = 4.0 * max(hitting_time, 1.0) * (resid_hi + table_rounding) + abs(float(vals.sum()) - 1.0)
                what = "L1 error w.r.t. the model's logits (residual x hitting time + table rounding)"
            if enclosure is not None:
                order = np.argsort(np.asarray(members))
                lo, hi = (np.asarray(x, dtype=np.float64)[order] for x in enclosure)
                with np.errstate(over="ignore", invalid="ignore"):
                    up = np.expm1(hi - log_pi)
                    down = -np.expm1(lo - log_pi)
                rel_e = float(np.max(np.maximum(up, down)))
                if np.isfinite(rel_e):
                    l1 = float(np.sum(vals * np.maximum(up, down)))
                    rel = rel_e
                    if bound is None or l1 < bound:
                        bound = l1
                        what = "entrywise relative error w.r.t. the model's logits (GTH enclosure)"
        if bound is not None and not bound < 1.0:
            bound, what = None, "nothing (the bound is not below 1)"
        self.error_bounds.append(bound)
        self.relative_bounds.append(rel)
        self.certifies.append(what)
        self.unrepresentable.append(bool(unrepresentable))
        self.reference_states.append(int(reference_state))
        self.methods.append(method)
        self.matvecs.append(matvecs)

    def summary(self) -> list[dict]:
        return [
            {"attractor": i, "method": m, "residual_l1": r, "error_bound_l1": b,
             "max_hitting_time": h, "reference_state": int(j), "relative_bound": rb, "certifies": c,
             "unrepresentable": u}
            for i, (m, r, b, h, j, rb, c, u) in enumerate(zip(
                self.methods, self.residuals, self.error_bounds, self.hitting_times, self.reference_states,
                self.relative_bounds, self.certifies, self.unrepresentable))
        ]


def _reference_state(block: sp.csr_matrix, iters: int = 200) -> int:
    """A state with large stationary mass, from a short lazy power run."""
    n = block.shape[0]
    v = np.full(n, 1.0 / n)
    bt = block.T.tocsr()
    for _ in range(iters):
        v = 0.5 * (v + bt @ v)
    return int(np.argmax(v))


def _solve_lu(block: sp.csr_matrix, j: int) -> tuple[np.ndarray, float]:
    """pi of an irreducible sparse block with reference state j; also tau_j."""
    n = block.shape[0]
    others = np.concatenate([np.arange(j), np.arange(j + 1, n)])
    off, exits = off_diagonal(block)
    q = off[others][:, others]
    r = np.asarray(block[j, others].todense()).ravel()
    m = (sp.diags(exits[others]) - q).tocsc()  # I - Q_j, its diagonal without cancellation
    try:
        lu = spla.splu(m.T.tocsc(), permc_spec="COLAMD")  # solves x (I - Q) = r as (I - Q)^T x^T = r^T
    except RuntimeError as e:  # "Factor is exactly singular": cancellation on a very stiff chain
        raise ConvergenceError(
            f"sparse LU of I - Q_j failed ({e}) on a class of {n} states: the chain is too stiff "
            f"(nearly deterministic or nearly decomposable) for method='lu'; use method='gth'"
        ) from None
    x = lu.solve(r)
    for _ in range(2):  # iterative refinement
        resid = r - m.T @ x
        x = x + lu.solve(resid)
    tau = lu.solve(np.ones(n - 1), trans="T")  # (I - Q) h = 1: expected hitting times of j
    pi = np.empty(n)
    pi[others] = x
    pi[j] = 1.0
    return pi / pi.sum(), certified_max_time(m, tau) if n > 1 else 0.0


def _solve_gth(block: sp.csr_matrix, j: int) -> tuple[np.ndarray, float]:
    dense = block.toarray()
    pi = gth(dense)
    n = dense.shape[0]
    if n == 1:
        return pi, 0.0
    others = np.concatenate([np.arange(j), np.arange(j + 1, n)])
    off = dense.copy()
    np.fill_diagonal(off, 0.0)
    exits = off.sum(axis=1)  # 1 - p_ii computed without cancellation (as GTH does)
    m = np.diag(exits[others]) - off[np.ix_(others, others)]  # I - Q_j
    try:
        tau = certified_max_time(m, np.linalg.solve(m, np.ones(n - 1)))
    except np.linalg.LinAlgError:
        tau = None
    return pi, tau


def _kernels(op, members: np.ndarray):
    """(kernels, local members): BlockKernels for a class below 1/BLOCK_FRACTION of the full states, else
    the structured ChainKernels on the full states (local indices are then the states themselves)."""
    if members.size and int(members.max()) >= op.space.num_full:
        raise ValueError("a closed class contains a prefix state; prefix states are always transient")
    if members.size * BLOCK_FRACTION <= op.space.num_full:
        kern = krylov.BlockKernels(op, members)
        return kern, np.arange(members.size)
    return krylov.ChainKernels(op, full_only=True), members


def _solve_power(kern, members: np.ndarray, tol: float, max_iter: int,
                 give_up_early: bool = False, keep: dict | None = None) -> tuple[np.ndarray, int]:
    """(pi over kern.size, steps): power iteration from the uniform law on ``members``, every CHECK-th step lazy.

    The schedule: CHECK - 1 plain steps pi <- pi P, then one lazy step pi <- pi (I + P) / 2
    at which the residual ||pi P - pi||_1 is measured. Per block the iteration matrix is
    P^(CHECK-1) (I + P) / 2: every eigenvalue lambda != 1 with |lambda| = 1 (a periodic
    class) is damped by |1 + lambda| / 2 < 1, and on an aperiodic chain a block costs
    CHECK pushes for nearly CHECK plain steps (the lazy iteration everywhere needs twice
    as many: 230 against 116 steps on the fast 2^20 benchmark chain). Plain steps swap
    two buffers around one product (``kern.push``: on full states one contraction over the
    (N,)*L index; no temporaries).

    With ``give_up_early`` (the trial run of ``auto``) it stops as soon as the residual's
    observed geometric decay over the last ``_PROBE`` steps projects that ``max_iter``
    steps will not reach ``tol``; ``keep`` (a dict) then receives the steps taken ("steps")
    and the last iterate ("iterate", normalised: the Krylov solve that follows starts from it).
    """
    size = kern.size
    v = np.zeros(size)
    v[members] = 1.0 / members.size
    w = np.empty(size)
    history = []
    res = float("inf")
    for it in range(1, max_iter + 1):
        kern.push(v, w)
        if it % CHECK and it < max_iter:
            v, w = w, v
            continue
        res = compiled.lazy_step(v, w)  # ||w - v||_1 = ||v P - v||_1, and v <- (v + w) / 2 for the next block
        if res <= tol:
            w /= w.sum()
            return w, it
        if give_up_early:
            history.append(res)
            back = _PROBE // CHECK
            if len(history) >= 4:
                rate = (history[-1] / history[-1 - back]) ** (1.0 / _PROBE)
                if rate >= 1.0 or it + np.log(tol / res) / np.log(rate) > max_iter:
                    break
    if keep is not None:
        w /= w.sum()
        keep.update(steps=it, iterate=w)
    raise ConvergenceError(
        f"power iteration did not reach residual {tol:g} in {max_iter} steps (last residual {res:.2e}); "
        f"the chain mixes slowly: use method='lu' or 'gth'"
    )


def _solve_krylov(kern, members: np.ndarray, tol: float, max_matvecs: int, start: np.ndarray | None = None):
    """(pi over kern.size, j, tau_j or None, matvecs) by BiCGSTAB/GMRES (see semio_jax.linalg.krylov); j = the state of
    largest mass (local index).

    The hitting-time solve reuses the stationary solve's greedy factor even when its sink j
    differs from the solve's reference state: the two differ in the few greedy edges at those
    two states, so it stays a good preconditioner (the solver judges the true residual), and a new
    factor would cost more than the extra iterations.
    """
    pi, _, info, factor = krylov.stationary_krylov(None, members, tol=tol, max_matvecs=max_matvecs, kern=kern,
                                                   start=start)
    del start  # (a vector of the class's size, not needed beside the second solve's)
    j = int(members[np.argmax(pi[members])])  # tau_j is smallest near the top of pi (1 / pi_j by Kac)
    tau, tmv = _tau_certified(kern, members, j, pi, factor, richardson=False)
    return pi, j, tau, info.matvecs + 1 + tmv


def _tau_certified(kern, members: np.ndarray, j: int, pi: np.ndarray, factor=None,
                   richardson: bool = True) -> tuple[float | None, int]:
    """(tau_j or None, matvecs): certified max_i E_i[steps to hit j] over the class, from its computed law.

    First (``richardson``: after a power solve, i.e. on a chain that mixes) the deflated
    Richardson iteration of :func:`krylov.hitting_time_certificate`, seeded by pi; if that
    does not reach its few-per-cent target, a Krylov solve of (I - Q_j) t = 1 with the greedy
    preconditioner to an inf-norm residual of TAU_RTOL (the certificate costs at most (1 + TAU_RTOL) / (1 - TAU_RTOL)
    in tightness and needs no more). Either way the M-matrix inequality certifies t_hat / c;
    None if it does not (the caller then tries :func:`hitting_time_bound`).
    """
    if members.size == 1:
        return 0.0, 0
    inside = np.zeros(kern.size, dtype=bool)
    inside[members] = True
    sink = np.zeros(kern.size, dtype=bool)
    sink[j] = True
    mv = 0
    tau = None
    if richardson:
        tau, mv = krylov.hitting_time_certificate(kern, inside, sink, pi[: kern.size])
    if tau is None:
        ones = np.where(inside & ~sink, 1.0, 0.0)
        t_hat, _, tinfo = krylov.column_solve(kern, inside, ones, rtol=TAU_RTOL, sink=sink, factor=factor)
        tau = krylov.certified_max_time_structured(kern, inside, sink, t_hat, out=ones)  # (ones: a buffer now)
        mv += tinfo.matvecs + 1
    return tau, mv


def hitting_time_bound(op, members: np.ndarray, j: int, max_factor: int = 64) -> float | None:
    """Upper bound on max_{i in members} E_i[steps to hit j], from exact n-step hitting probabilities.

    g_0 = 1_j; g_{t+1} = 1_j + (1 - 1_j) P g_t gives g_n(i) = P_i(tau_j <= n);
    then E_i tau_j <= n / min_i g_n(i). None if no n <= max_factor * L works.
    """
    g = np.zeros(op.num_states)
    g[j] = 1.0
    n, target = 0, op.space.length
    while target <= max_factor * op.space.length:
        while n < target:
            g = op.pull(g)
            g[j] = 1.0
            n += 1
        p_min = float(np.min(g[members]))
        if p_min > 0:
            return n / p_min
        target *= 2
    return None


def _solve_iterative(op, members: np.ndarray, m: str, method: str, tol: float, max_iter: int):
    """(pi_full, j, tau_j, method used, matvecs) by power iteration or a Krylov solve on the class's kernels.

    ``m``: "power" or "krylov"; under ``method="auto"`` a class above KRYLOV_AUTO_MAX gets a
    trial power run first (see the module docstring).
    """
    mv = None
    kern, local = _kernels(op, members)
    pi_loc, trial = None, {}
    if m == "power" or (method == "auto" and members.size > KRYLOV_AUTO_MAX):
        # Big classes under auto: power first (with its certificate from pi it costs about
        # n + n/6 products on a chain that mixes in n; a Krylov step costs several times a
        # power step), Krylov when the trial projects a miss.
        try:
            pi_loc, mv = _solve_power(kern, local, tol, max_iter if m == "power" else
                                      min(max_iter, POWER_FIRST_ITERS), give_up_early=m != "power", keep=trial)
        except ConvergenceError:
            if m == "power":
                raise
        else:
            m = "power"
            jl = int(local[np.argmax(pi_loc[local])])
            tau, tmv = _tau_certified(kern, local, jl, pi_loc)
            mv += tmv
    if pi_loc is None:
        pi_loc, jl, tau, mv = _solve_krylov(kern, local, tol, min(max_iter, 5000), start=trial.pop("iterate", None))
        mv += trial.get("steps", 0)  # the trial's pushes count too
    j = int(members[jl]) if isinstance(kern, krylov.BlockKernels) else jl
    if local is members and pi_loc.size == op.num_states:
        pi_full = pi_loc  # the structured kernels' own law: already zero off the class, no copy
    else:
        pi_full = np.zeros(op.num_states)
        pi_full[members] = pi_loc[local]
    if tau is None:  # no certificate from the solves: exact n-step hitting probabilities (weaker)
        tau = hitting_time_bound(op, members, j)
    return pi_full, j, tau, m, mv


@cached_analysis("stationary")
def stationary_result(op, method: str = "auto", tol: float = 1e-12, max_iter: int = 100_000,
                      mesh=None) -> StationaryResult:
    """Stationary distribution of every attractor with residuals and error bounds.

    Args:
      op: the Operator.
      method: "auto" (GTH <= 1024 states per class, LU <= 8192, above that a short power run,
        then Krylov if the chain mixes too slowly for it), "gth", "lu", "krylov" or "power". With ``mesh``: "power" (also for
        "auto") or "gmres", see :func:`stationary_sharded`.
      tol: residual target of the iterative methods (krylov, power).
      max_iter: iteration budget of the power method (krylov: at most max_iter matvecs, capped at 5000).
      mesh: a ``jax.sharding.Mesh``: solve on its devices (:func:`stationary_sharded`).
    """
    if mesh is not None:
        if method not in ("auto", "power", "gmres"):
            raise ValueError(f"unknown sharded stationary method {method!r}; use auto, power or gmres")
        return stationary_sharded(op, mesh, method="power" if method == "auto" else method, tol=tol,
                                  max_iter=max_iter)
    if method not in ("auto", "gth", "lu", "krylov", "power"):
        raise ValueError(f"unknown stationary method {method!r}; use auto, gth, lu, krylov or power")
    cs = class_structure(op)
    out = StationaryResult(num_states=op.num_states)
    for i, members in enumerate(cs.attractors):
        m, extra = method, {}
        if m == "auto":
            m = "gth" if members.size <= GTH_MAX else "lu" if members.size <= LU_MAX else "krylov"
        mv = None
        if m in ("power", "krylov"):
            pi_full, j, tau, m, mv = _solve_iterative(op, members, m, method, tol, max_iter)
        else:
            try:
                pi_full, j, tau, m, extra = _solve_direct(op, members, m)
            except ConvergenceError:
                if method != "auto" or m != "lu":
                    raise
                # the next methods: Krylov, then power iteration (a class whose float64 table is
                # reducible because some of its moves underflow ends here, flagged below)
                try:
                    pi_full, j, tau, _, mv = _solve_iterative(op, members, "krylov", "krylov", tol, max_iter)
                    m = "krylov (lu failed)"
                except ConvergenceError:
                    pi_full, j, tau, _, mv = _solve_iterative(op, members, "power", "power", tol, max_iter)
                    m = "power (lu failed)"
                extra = {}
        if m.startswith(("power", "krylov")):
            extra = {"unrepresentable": op.tiny_moves(members)}
        if not np.all(np.isfinite(pi_full)):
            raise ConvergenceError(f"the {m} solve of attractor {i} returned a non-finite vector")
        resid = float(np.abs(op.push(pi_full) - pi_full).sum())
        out.add(members, pi_full, residual=resid, hitting_time=tau, reference_state=j, method=m,
                n_tokens=op.n_tokens, matvecs=mv, table_rounding=op.table_rounding, **extra)
        if out.unrepresentable[-1]:
            warnings.warn(
                f"attractor {i} ({members.size} states) has possible transitions below the float64 range and is "
                f"larger than the log-domain GTH limit ({GTH_MAX} states): its stationary law ({m}) treats them "
                f"as 0 and is not certified", UnrepresentableWarning, stacklevel=2)
    return out


def _log_widening(rho: float) -> float:
    """An additive log-domain margin covering a relative error rho of the probabilities (log(1 + rho) <= rho)."""
    return 1.01 * rho + 2 * EPS


def _log_block(op, members: np.ndarray) -> np.ndarray:
    """float64[n, n] log P restricted to ``members`` (-inf where no move; moves leaving dropped)."""
    n = members.size
    pos = np.full(op.num_states, -1, dtype=np.int64)
    pos[members] = np.arange(n)
    succ = op.space.successors_of(np.asarray(members)[:, None], np.arange(op.n_tokens))  # [n, N]
    lp = op.log_probs[members]  # [n, N]
    tgt = pos[succ]
    out = np.full((n, n), -np.inf)
    rows = np.repeat(np.arange(n), op.n_tokens).reshape(n, -1)
    ok = (tgt >= 0) & np.isfinite(lp)
    np.logaddexp.at(out, (rows[ok], tgt[ok]), lp[ok])
    return out


def _solve_direct(op, members: np.ndarray, m: str):
    """(pi_full, j, tau, method, add-kwargs) by GTH (float64 or log domain) or LU; see stationary_result.

    GTH runs in the log domain when the class has possible transitions below TINY (their
    float64 entries underflow or lose relative accuracy), or when the float64 run breaks down
    (a vanishing exit rate, a non-finite entry); the enclosure certifies the result entrywise.
    LU on such a class is flagged unrepresentable.
    """
    tiny = op.tiny_moves(members)
    block = op.block(members)
    jl = _reference_state(block) if members.size > 1 else 0
    extra: dict = {}
    if m == "gth" and not tiny:
        try:
            pi, tau = _solve_gth(block, jl)
            if not np.all(np.isfinite(pi)):
                raise ConvergenceError("GTH returned a non-finite vector")
            rho = op.table_rounding
            dense = block.toarray()
            try:
                lo, hi = gth_enclosure(dense * (1.0 - rho), dense * (1.0 + rho))
                with np.errstate(divide="ignore"):
                    extra["enclosure"] = (np.log(lo), np.log(hi))
            except ConvergenceError:  # the float64 enclosure left the normal range: bound it in logs
                lb, d = _log_block(op, members), _log_widening(rho)
                extra["enclosure"] = gth_log_enclosure(lb - d, lb + d)
        except ConvergenceError:
            tiny = True  # the float64 elimination broke down (a vanishing rate, a non-finite entry): the log domain cannot
    if m == "gth" and tiny:
        lb, d = _log_block(op, members), _log_widening(op.table_rounding)
        lo, hi = gth_log_enclosure(lb - d, lb + d)
        log_pi = 0.5 * (lo + hi)
        log_pi -= float(np.logaddexp.reduce(log_pi))
        pi = np.exp(log_pi)
        extra.update(enclosure=(lo, hi), log_pi=log_pi)
        m = "gth (log domain)"
        tau = None
    elif m == "lu":
        pi, tau = _solve_lu(block, jl)
        extra["unrepresentable"] = tiny
    pi_full = np.zeros(op.num_states)
    pi_full[members] = np.maximum(pi, 0.0)
    if "log_pi" not in extra:
        pi_full /= pi_full.sum()
    return pi_full, int(members[jl]), tau, m, extra


def stationary(op, method: str = "auto") -> np.ndarray:
    """float64[n_attractors, S]: row i is the stationary distribution supported on attractor i."""
    return stationary_result(op, method=method).distributions


def stationary_sharded(op, mesh=None, *, method: str = "power",
                       tol: float = 1e-12, max_iter: int = 100_000, restart: int = 30,
                       gmres_maxiter: int = 200):
    """Stationary distribution of every attractor computed on the mesh, with certified bounds.

    Returns a :class:`~semio_jax.analysis.stationary.StationaryResult` built as
    ``stationary_result(op, method="power")`` builds it: the residual
    ||pi P - pi||_1, the bound ``4 tau_j residual`` (with the same rounding
    margins) where tau_j is bounded from exact n-step hitting probabilities of
    the reference state j (largest mass), all products on the mesh.

    Methods:
      "power": lazy power iteration pi <- pi (I + P) / 2 from the uniform
        vector on the attractor until the residual is <= ``tol`` (else
        ConvergenceError), one compiled loop on the devices.
      "gmres": j = argmax of a 200-step lazy power run, then
        ``x (I - Q_j) = r_j`` by restarted GMRES (jax.scipy.sparse.linalg.gmres
        with the sharded push as its operator), pi = (x, 1) / Z, then lazy power
        steps from there until the residual is <= ``tol`` (usually none).
    """

    if method not in ("power", "gmres"):
        raise ValueError(f"unknown sharded stationary method {method!r}; use power or gmres")
    sop = op if isinstance(op, ShardedOperator) else ShardedOperator(op, mesh)
    base = sop.operator
    cs = class_structure(base)
    out = StationaryResult(num_states=base.num_states)
    label = f"{method} (sharded, {sop.n_devices} devices)"
    for i, members in enumerate(cs.attractors):
        uniform = np.zeros(base.num_states)
        uniform[members] = 1.0 / members.size
        v0 = sop.vector(uniform)
        if method == "gmres" and members.size > 1:
            w, _, _ = sop.power(v0, 0.0, 200)  # short lazy run for a reference state of large mass
            j = int(members[np.argmax(sop.to_numpy(w)[members])])
            mask = sop.indicator(members[members != j])
            ej = sop.indicator([j])
            solve = sop._kernels.gmres(restart, gmres_maxiter, min(tol, 1e-13))
            x = sop.to_numpy(solve(sop.probs, mask, ej))
            pi0 = np.zeros(base.num_states)
            pi0[members] = np.maximum(x[members], 0.0)
            pi0[j] = 1.0
            v0 = sop.vector(pi0 / pi0.sum())
        w, res, it = sop.power(v0, tol, max_iter)
        if res > tol:
            raise ConvergenceError(
                f"sharded power iteration did not reach residual {tol:g} in {max_iter} steps (last residual "
                f"{res:.2e}); the chain mixes slowly: use method='gmres' or the single-device 'lu'/'gth'"
            )
        pi_full = sop.to_numpy(w)
        j = int(members[np.argmax(pi_full[members])])
        tau = sop.hitting_time_bound(members, j)
        resid = float(np.abs(sop.to_numpy(sop.push(sop.vector(pi_full))) - pi_full).sum())
        out.add(members, pi_full, residual=resid, hitting_time=tau, reference_state=j, method=label,
                n_tokens=base.n_tokens, matvecs=it)
    return out
