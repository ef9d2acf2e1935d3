"""Metastable sets: a spectral (PCCA+-style) soft partition of an attractor.

A chain is **metastable** when its state space splits into k sets between which
it moves rarely: P then has k eigenvalues close to 1 (1 = lambda_1 >= Re
lambda_2 >= ... >= Re lambda_k >> Re lambda_(k+1)) and the corresponding right
eigenvectors are nearly constant on each set. This module works on one
attractor C (the chain restricted to a closed class, where pi > 0).

Algorithm (a documented PCCA+ variant, after Deuflhard & Weber 2005 and
Roeblitz & Weber 2013):

1. **k.** The leading eigenvalues by real part (dense ``eigvals`` for |C| <=
   DENSE_MAX, else ARPACK, largest modulus of the lazy operator (I + P)/2 built
   from the structured :meth:`Operator.pull`, which ranks by real part near 1); unless
   given, k is the k in [min_sets, max_sets] (default [1, 8]) with the largest
   gap Re lambda_k - Re lambda_(k+1). k never splits a complex-conjugate pair.
   k = 1 (the gap after lambda_1 = 1 is the largest) means **no metastability**:
   the result is the trivial partition (one set, infinite exit time); pass k
   (or min_sets=2) to force a decomposition.
2. **Invariant subspace.** A real basis of the invariant subspace of P for
   those k eigenvalues: for |C| <= DENSE_MAX the ordered real Schur form of the
   pi-weighted matrix D^(1/2) P D^(-1/2) (D = diag(pi); robust for complex and
   nearly degenerate eigenvalues), mapped back by D^(-1/2); otherwise the real
   and imaginary parts of ARPACK's right eigenvectors (also the dense fallback
   when the k-th and (k+1)-th real parts tie, e.g. a multiple eigenvalue 0). The basis is made
   pi-orthonormal with first column the constant vector 1 (which lies in it,
   P 1 = 1).
3. **Inner simplex algorithm (ISA).** The rows of X [|C|, k] lie near a simplex
   whose vertices are the "purest" states; ISA picks k vertex rows greedily (the
   row of largest norm, then repeatedly the row farthest from the span of those
   chosen) and sets chi = X X[vertices]^(-1). Rows of chi sum to 1 exactly
   (first column of X is 1) and chi = e_j on vertex j.
4. **Feasibility.** chi may have small negative entries; they are clipped to 0
   and rows renormalised (the most negative entry before clipping is reported
   as ``negativity``; it is ~0 for clearly metastable chains). This replaces the
   PCCA+ optimisation of the simplex, which we do not perform.

Derived quantities:

* stationary mass of set j: m_j = sum_x pi(x) chi(x, j);
* **crispness** (1/k) sum_j (sum_x pi(x) chi(x, j)^2) / m_j in (0, 1]: 1 for a
  hard partition; with ``negativity`` it says how much to trust the sets;
* coarse-grained transition matrix (Galerkin projection):
  P_c = diag(m)^(-1) chi^T D P chi, row-stochastic and nonnegative, with
  stationary vector m (chi rows sum to 1, pi P = pi);
* **cores**: core_j = {x : chi(x, j) >= threshold} (0.9 by default; disjoint
  for threshold > 1/2); if a core would be empty it is the single state of
  largest chi(., j) (noted);
* **exit times** from core j: tau(x) = E_x[min{t >= 1 : X_t not in core_j}] solves
  (I - P_jj) tau = 1 on the core; reported averaged over pi restricted to the
  core (``exit_times``) and its maximum;
* **mean first-passage times** between cores: h_j(x) = E_x[steps to hit core_j]
  solves (I - P_RR) h = 1 on R = C \\ core_j; mfpt[i, j] = the pi|core_i average
  of h_j; ``mfpt_other[i]`` is the same for the union of the other cores.

The solves use subtraction-free GTH-style elimination (:func:`gth_absorbing`)
for sets of up to GTH_MAX = 1024 states - entrywise accurate even when an exit
takes 1e30 steps - and sparse LU (scipy ``splu``) above.
:func:`metastable_reference` recomputes exit and passage times with dense
``numpy.linalg.solve`` on loop-built matrices (test oracle).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from ..errors import ConvergenceError
from .classes import class_structure
from .mixing import DENSE_MAX
from .stationary import stationary_result

__all__ = ["MetastableResult", "metastable_sets", "pcca", "inner_simplex", "exit_and_passage_times", "gth_absorbing"]


@dataclass
class MetastableResult:
    """A soft partition of one attractor into k metastable sets.

    Attributes:
      attractor: the attractor's index; states: int64[n] its states (sorted).
      k: number of sets.
      eigenvalues: complex, the leading eigenvalues by real part (k + 1 or more of them).
      memberships: float64[n, k], rows sum to 1, nonnegative (chi); the sets are ordered by the
        smallest state whose largest membership lies in them.
      mass: float64[k], stationary mass of each set.
      coarse: float64[k, k], the coarse-grained transition matrix.
      cores: list of int64 arrays of state indices (operator numbering).
      threshold: the core threshold on chi.
      exit_times: float64[k], pi|core-averaged mean exit time from each core.
      exit_times_max: float64[k], the largest over the core's states.
      mfpt: float64[k, k], pi|core_i-averaged mean first-passage time from core i to core j (0 on the diagonal).
      mfpt_other: float64[k], the same to the union of the other cores.
      vertices: int64[k], ISA's vertex states.
      negativity: most negative membership before clipping.
      crispness: (1/k) sum_j <chi_j, chi_j>_pi / m_j, 1 for a hard partition.
      method: "schur", "arnoldi" or "eigenvectors" (dense fallback when Schur cannot separate the
        k leading eigenvalues: their real parts tie at the cut).
      note: caveats.
    """

    attractor: int
    states: np.ndarray
    k: int
    eigenvalues: np.ndarray
    memberships: np.ndarray
    mass: np.ndarray
    coarse: np.ndarray
    cores: list
    threshold: float
    exit_times: np.ndarray
    exit_times_max: np.ndarray
    mfpt: np.ndarray
    mfpt_other: np.ndarray
    vertices: np.ndarray
    negativity: float
    method: str
    note: str = ""
    crispness: float = 1.0
    pi: np.ndarray = field(default=None, repr=False)

    @property
    def crisp(self) -> np.ndarray:
        """int64[n]: the set of largest membership of every state."""
        return np.argmax(self.memberships, axis=1)

    def summary(self) -> dict:
        return {
            "attractor": self.attractor, "k": self.k,
            "leading_eigenvalues_real": [float(np.real(v)) for v in self.eigenvalues[: self.k + 1]],
            "mass": self.mass.tolist(), "coarse": self.coarse.tolist(),
            "core_sizes": [int(c.size) for c in self.cores], "exit_times": self.exit_times.tolist(),
            "mfpt": self.mfpt.tolist(), "negativity": self.negativity, "crispness": self.crispness,
            "method": self.method, "note": self.note,
        }


# ------------------------------------------------------------ the simplex
def inner_simplex(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ISA: (chi = X X[vertices]^-1, vertices) for a basis X [n, k] whose first column is 1."""
    n, k = x.shape
    vertices = np.zeros(k, dtype=np.int64)
    norms = np.linalg.norm(x, axis=1)
    vertices[0] = int(np.argmax(norms))
    if k > 1:
        ortho = x - x[vertices[0]]  # translate: the first vertex is the origin
        for j in range(1, k):
            dist = np.linalg.norm(ortho, axis=1)
            dist[vertices[:j]] = -1.0
            vertices[j] = int(np.argmax(dist))
            v = ortho[vertices[j]] / np.linalg.norm(ortho[vertices[j]])
            ortho = ortho - np.outer(ortho @ v, v)  # Gram-Schmidt against the new direction
    a = np.linalg.inv(x[vertices])
    return x @ a, vertices


def _pi_basis(x0: np.ndarray, pi: np.ndarray, k: int) -> np.ndarray:
    """pi-orthonormal basis [n, k] of span(x0) (which contains 1) with first column 1."""
    r = np.sqrt(pi)
    w = r[:, None] * x0  # Euclidean coordinates
    u = r / np.linalg.norm(r)
    b = w - np.outer(u, u @ w)
    left, _, _ = np.linalg.svd(b, full_matrices=False)
    y = np.column_stack([u, left[:, : k - 1]])
    return y / r[:, None]


def _choose_k(real_parts: np.ndarray, vals: np.ndarray, min_sets: int, max_sets: int) -> int:
    top = min(max_sets, real_parts.size - 1)
    if top < min_sets:
        return max(1, min(min_sets, real_parts.size))
    gaps = real_parts[min_sets - 1: top] - real_parts[min_sets: top + 1]  # gap after lambda_k, k = min..top
    for i in range(gaps.size):  # never split a conjugate pair
        kk = min_sets + i
        if abs(np.imag(vals[kk - 1])) > 0 and np.isclose(vals[kk - 1], np.conj(vals[kk])):
            gaps[i] = -np.inf
    return int(min_sets + int(np.argmax(gaps)))


def pcca(block, pi: np.ndarray, k: int | None = None, min_sets: int = 1, max_sets: int = 8,
         matvec=None) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Steps 1-3 of the module docstring on a class block.

    Args:
      block: the class block, a dense array or sparse matrix [n, n] (row-stochastic, irreducible).
      pi: its stationary distribution (positive).
      k: number of sets (None: by the largest eigenvalue gap).
      matvec: optional function f -> P f on the class for the Arnoldi path.

    Returns (chi before clipping [n, k], vertices, leading eigenvalues by real part, method).
    """
    n = block.shape[0]
    pi = np.asarray(pi, dtype=np.float64)
    if n <= DENSE_MAX:
        dense = block.toarray() if sp.issparse(block) else np.asarray(block, dtype=np.float64)
        vals = sla.eigvals(dense)
        order = np.argsort(-vals.real, kind="stable")
        vals = vals[order]
        if k is None:
            k = _choose_k(vals.real, vals, min_sets, max_sets)
        _check_k(k, n, vals)
        if k == 1:
            return np.ones((n, 1)), np.array([int(np.argmax(pi))]), vals, "schur"
        r = np.sqrt(pi)
        a = (r[:, None] * dense) / r[None, :]
        cut = 0.5 * (vals[k - 1].real + vals[k].real) if k < n else -np.inf
        _, z, sdim = sla.schur(a, output="real", sort=lambda re, im: re > cut)
        if sdim == k:
            x0 = z[:, :k] / r[:, None]
            method = "schur"
        else:  # real parts tied at the cut (e.g. a multiple eigenvalue 0): right eigenvectors instead
            evals, evecs = sla.eig(dense)
            o2 = np.argsort(-evals.real, kind="stable")
            x0 = _eigvec_basis(evals[o2], evecs[:, o2], k)
            method = "eigenvectors"
    else:
        if matvec is None:
            blk = sp.csr_matrix(block)
            matvec = blk.dot
        # Largest |mu| of the lazy operator (I + P)/2, mu = (1 + lambda)/2: near lambda = 1 this ranks by
        # real part, and ARPACK converges far better in "LM" mode than in "LR" mode.
        lin = spla.LinearOperator((n, n), dtype=np.float64,
                                  matvec=lambda f: 0.5 * (np.asarray(f).ravel() + matvec(np.asarray(f).ravel())))
        nev = min(max_sets + 2, n - 2) if k is None else min(max(k + 2, 3), n - 2)
        v0 = np.random.default_rng(0).random(n) + 0.5
        try:
            mu, vecs = spla.eigs(lin, k=nev, which="LM", v0=v0, tol=1e-10, maxiter=20_000,
                                 ncv=min(n, max(2 * nev + 1, 40)))
        except spla.ArpackNoConvergence as exc:
            need = (k if k is not None else min_sets) + 1
            if exc.eigenvalues is None or len(exc.eigenvalues) < need:
                raise ConvergenceError(
                    f"ARPACK found {0 if exc.eigenvalues is None else len(exc.eigenvalues)} of the {nev} leading "
                    f"eigenvalues of a class of {n} states; pass a smaller max_sets or k") from exc
            mu, vecs = exc.eigenvalues, exc.eigenvectors
        vals = 2.0 * mu - 1.0
        order = np.argsort(-vals.real, kind="stable")
        vals, vecs = vals[order], vecs[:, order]
        if k is None:
            k = _choose_k(vals.real, vals, min_sets, min(max_sets, nev - 1))
        _check_k(k, n, vals)
        if k == 1:
            return np.ones((n, 1)), np.array([int(np.argmax(pi))]), vals, "arnoldi"
        x0 = _eigvec_basis(vals, vecs, k)
        method = "arnoldi"
    x = _pi_basis(x0, pi, k)
    chi, vertices = inner_simplex(x)
    return chi, vertices, vals, method


def _eigvec_basis(vals: np.ndarray, vecs: np.ndarray, k: int) -> np.ndarray:
    """Real basis [n, k] from the first k eigenvectors (a conjugate pair gives real and imaginary parts)."""
    cols = []
    for j in range(k):
        second = j > 0 and abs(vals[j].imag) > 0 and np.isclose(vals[j], np.conj(vals[j - 1]))
        cols.append(vecs[:, j - 1].imag if second else vecs[:, j].real)
    return np.column_stack(cols)


def _check_k(k: int, n: int, vals: np.ndarray) -> None:
    if not 1 <= k <= n:
        raise ValueError(f"k must lie in 1..{n} (the class size), got {k}")
    if k < vals.size and abs(vals[k - 1].imag) > 0 and np.isclose(vals[k - 1], np.conj(vals[k])):
        raise ValueError(f"k={k} splits a complex-conjugate pair of eigenvalues; use k={k - 1} or k={k + 1}")


# ------------------------------------------------------------ hitting times
GTH_MAX = 1024  # sets up to this size are solved by subtraction-free elimination


def gth_absorbing(q: np.ndarray, exits: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve (I - Q) x = b for a substochastic Q without subtractions (GTH-style state reduction).

    ``q`` [n, n] holds the transitions inside the set (its diagonal is ignored),
    ``exits`` [n] the mass leaving the set from each state (sum_{j outside} P_ij,
    a sum of positive terms), ``b`` >= 0. The diagonal of I - Q is taken as
    exits_i + sum_{j != i} q_ij, so nothing is ever subtracted and x is
    accurate entrywise even when leaving the set is astronomically unlikely
    (an expected time of 1e30 steps is computed as such, where an LU solve of
    I - Q would return noise). O(n^3).
    """
    a = np.array(q, dtype=np.float64, copy=True)
    np.fill_diagonal(a, 0.0)
    e = np.array(exits, dtype=np.float64, copy=True)
    rhs = np.array(b, dtype=np.float64, copy=True)
    n = a.shape[0]
    d = np.zeros(n)
    for k in range(n - 1, -1, -1):
        d[k] = e[k] + a[k, :k].sum()
        if d[k] <= 0.0:
            raise ValueError("the set cannot be left from some state (no exit mass): the expected time is infinite")
        if k == 0:
            break
        f = a[:k, k] / d[k]  # eliminate state k: fold its paths into the states 0..k-1
        a[:k, :k] += np.outer(f, a[k, :k])
        e[:k] += f * e[k]
        rhs[:k] += f * rhs[k]
    x = np.empty(n)
    for k in range(n):
        x[k] = (rhs[k] + a[k, :k] @ x[:k]) / d[k]
    return x


def _expected_times(block: sp.csr_matrix, inside: np.ndarray) -> np.ndarray:
    """E_x[min{t >= 1 : X_t not in ``inside``}] for x in ``inside`` (local indices): (I - P_II) t = 1.

    GTH-style elimination up to GTH_MAX states, else sparse LU with the diagonal
    1 - p_ii taken as the off-diagonal row sum (no cancellation) and two steps of refinement.
    """
    sub = block[inside][:, inside]
    # exit mass as a sum of positive terms: the entries of the rows outside ``inside``
    mask = np.ones(block.shape[0], dtype=bool)
    mask[inside] = False
    exits = np.asarray(block[inside][:, np.flatnonzero(mask)].sum(axis=1)).ravel()
    one = np.ones(inside.size)
    if inside.size <= GTH_MAX:
        return gth_absorbing(sub.toarray(), exits, one)
    off = (sub - sp.diags(sub.diagonal())).tocsr()
    off.eliminate_zeros()
    m = (sp.diags(exits + np.asarray(off.sum(axis=1)).ravel()) - off).tocsc()
    lu = spla.splu(m, permc_spec="COLAMD")
    x = lu.solve(one)
    return x + lu.solve(one - m @ x)


def _hit_times(block: sp.csr_matrix, target: np.ndarray) -> np.ndarray:
    """E_x[steps to hit ``target``] for every x (0 on target): (I - P_RR) h = 1 on R = the rest."""
    n = block.shape[0]
    h = np.zeros(n)
    rest = np.setdiff1d(np.arange(n), target)
    if rest.size:
        h[rest] = _expected_times(block, rest)
    return h


def _exit_times(block: sp.csr_matrix, core: np.ndarray) -> np.ndarray:
    """E_x[min{t >= 1 : X_t not in core}] for x in core: (I - P_cc) tau = 1."""
    if core.size == block.shape[0]:
        return np.full(core.size, np.inf)
    return _expected_times(block, core)


def exit_and_passage_times(block, pi: np.ndarray, cores_local: list) -> tuple:
    """(exit mean, exit max, mfpt[k, k], mfpt_other[k]) for cores given as local indices of the block."""
    block = sp.csr_matrix(block)
    k = len(cores_local)
    exit_mean, exit_max = np.zeros(k), np.zeros(k)
    mfpt = np.zeros((k, k))
    other = np.zeros(k)
    w = [pi[c] / pi[c].sum() for c in cores_local]
    for j, c in enumerate(cores_local):
        tau = _exit_times(block, c)
        exit_mean[j], exit_max[j] = float(w[j] @ tau), float(tau.max())
        if k > 1:
            h = _hit_times(block, c)
            for i in range(k):
                if i != j:
                    mfpt[i, j] = float(w[i] @ h[cores_local[i]])
            union = np.concatenate([cores_local[i] for i in range(k) if i != j])
            other[j] = float(w[j] @ _hit_times(block, union)[c])
    if k == 1:
        other[:] = np.inf
    return exit_mean, exit_max, mfpt, other


# ------------------------------------------------------------------- main
def metastable_sets(op, k: int | None = None, attractor: int | None = None, threshold: float = 0.9,
                    min_sets: int = 1, max_sets: int = 8) -> MetastableResult:
    """PCCA+-style metastable decomposition of one attractor (see module docstring).

    Args:
      op: the Operator; with several attractors, ``attractor`` must name one.
      k: number of sets (None: the largest gap among the leading real parts, k in [min_sets, max_sets];
        k = 1 means no metastability).
      threshold: membership defining the cores (> 1/2).
    """
    if not 0.5 < threshold <= 1.0:
        raise ValueError(f"threshold must lie in (0.5, 1], got {threshold}")
    cs = class_structure(op)
    if attractor is None:
        if len(cs.attractors) != 1:
            raise ValueError(f"the operator has {len(cs.attractors)} attractors; metastable sets are computed per "
                             f"attractor: pass attractor=0..{len(cs.attractors) - 1}")
        attractor = 0
    members = cs.attractors[attractor]
    n = members.size
    if n < 2:
        raise ValueError(f"attractor {attractor} has a single state: nothing to partition")
    pi = stationary_result(op).distribution(attractor)[members]
    block = op.block(members)

    def matvec(f):
        full = np.zeros(op.num_states)
        full[members] = f
        return op.pull(full)[members]

    chi0, vertices, vals, method = pcca(block, pi, k=k, min_sets=min_sets, max_sets=max_sets, matvec=matvec)
    k = chi0.shape[1]
    negativity = float(min(0.0, chi0.min()))
    chi = np.clip(chi0, 0.0, None)
    chi /= chi.sum(axis=1, keepdims=True)
    # Canonical order of the sets: by the smallest state whose largest membership is in the set.
    crisp = np.argmax(chi, axis=1)
    first = [int(np.flatnonzero(crisp == j)[0]) if (crisp == j).any() else n + int(vertices[j]) for j in range(k)]
    perm = np.argsort(first, kind="stable")
    chi, vertices = chi[:, perm], vertices[perm]
    mass = pi @ chi
    pchi = block @ chi  # [n, k]
    coarse = (chi * pi[:, None]).T @ pchi / mass[:, None]
    notes = []
    cores_local = []
    for j in range(k):
        c = np.flatnonzero(chi[:, j] >= threshold)
        if c.size == 0:
            c = np.array([int(np.argmax(chi[:, j]))])
            notes.append(f"set {j}: no state has membership >= {threshold}; its core is its best state")
        cores_local.append(c)
    exit_mean, exit_max, mfpt, other = exit_and_passage_times(block, pi, cores_local)
    crispness = float(np.mean(((chi**2) * pi[:, None]).sum(axis=0) / mass))
    if negativity < -1e-6:
        notes.append(f"memberships clipped (most negative {negativity:.2e})")
    if k == 1:
        notes.append("no metastability: the largest eigenvalue gap is after lambda_1 = 1 (pass k to force sets)")
    return MetastableResult(
        attractor=int(attractor), states=members, k=int(k), eigenvalues=vals, memberships=chi, mass=mass,
        coarse=coarse, cores=[members[c] for c in cores_local], threshold=threshold, exit_times=exit_mean,
        exit_times_max=exit_max, mfpt=mfpt, mfpt_other=other, vertices=members[vertices],
        negativity=negativity, method=method, note="; ".join(notes), pi=pi, crispness=crispness)


